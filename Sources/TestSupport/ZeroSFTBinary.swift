import Foundation

/// Finds the built `zero-sft` executable for tests that run it as a separate process.
///
/// Looks, in order, at `$ZERO_SFT_BINARY`, the directory of the running test executable
/// (`/proc/self/exe`, so a `swift test -c release` run finds the release build next to it), and
/// `.build/release` then `.build/debug` under the package root.
public enum ZeroSFTBinary {
    /// The numeric options of every command that have no default value (so `--help`'s dump cannot tell
    /// they are numeric): the option sweeps of the edge tests feed each bad values.
    public static let numericOptionsWithoutDefault: Set<String> = [
        "max-steps", "epochs", "max-context", "host-memory", "fail-on-rank", "mismatch-on-rank", "save-every", "keep-last",
        "eval-every", "val-fraction", "early-stop",
    ]

    /// The executable: the first candidate that exists, or the expected path next to the running
    /// test executable when none does (``MPIRun`` then throws ``ZeroSFTBinaryError``, which tells
    /// you to build first).
    public static var url: URL {
        (try? locate()) ?? candidates()[0]
    }

    /// The executable, or a ``ZeroSFTBinaryError`` listing where it looked.
    public static func locate() throws -> URL {
        let candidates = candidates()
        guard let found = candidates.first(where: { FileManager.default.isExecutableFile(atPath: $0.path) }) else {
            throw ZeroSFTBinaryError(searched: candidates)
        }
        return found
    }

    /// Every place ``locate()`` looks, most specific first.
    public static func candidates() -> [URL] {
        var candidates: [URL] = []
        if let explicit = ProcessInfo.processInfo.environment["ZERO_SFT_BINARY"], !explicit.isEmpty {
            candidates.append(URL(fileURLWithPath: explicit))
        }
        let runningExecutable = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath()
        candidates.append(runningExecutable.deletingLastPathComponent().appendingPathComponent("zero-sft"))
        for configuration in ["release", "debug"] {
            candidates.append(packageRoot.appendingPathComponent(".build/\(configuration)/zero-sft"))
        }
        return candidates
    }

    /// The package root, two directories above this source file.
    public static var packageRoot: URL {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    }
}

/// The `zero-sft` executable is not built.
public struct ZeroSFTBinaryError: Error, CustomStringConvertible {
    /// The paths that were tried.
    public var searched: [URL]

    public var description: String {
        "the zero-sft executable is not built (looked at \(searched.map(\.path).joined(separator: ", "))). "
            + "Run `swift build -c release` first (the tests run it as a separate process), "
            + "or point ZERO_SFT_BINARY at it."
    }
}
