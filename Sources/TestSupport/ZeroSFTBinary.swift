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

    /// Every (subcommand, long option) whose value is a number, from the binary's own
    /// `--experimental-dump-help` JSON (`dump`), so an option added later is covered too: options
    /// whose default parses as a number, and ``numericOptionsWithoutDefault``.
    public static func numericOptions(inHelpDump dump: String) throws -> [(command: String, option: String)] {
        guard let root = try JSONSerialization.jsonObject(with: Data(dump.utf8)) as? [String: Any],
              let subcommands = (root["command"] as? [String: Any])?["subcommands"] as? [[String: Any]]
        else { throw HelpDumpError(dump: String(dump.prefix(200))) }
        var result: [(command: String, option: String)] = []
        for command in subcommands {
            guard let name = command["commandName"] as? String else { continue }
            for argument in command["arguments"] as? [[String: Any]] ?? [] where argument["kind"] as? String == "option" {
                guard let option = (argument["names"] as? [[String: Any]])?.first(where: { $0["kind"] as? String == "long" })?["name"] as? String
                else { continue }
                let defaultValue = (argument["defaultValue"] as? String)?.split(separator: ",").first.map(String.init)
                guard defaultValue.flatMap(Double.init) != nil || numericOptionsWithoutDefault.contains(option) else { continue }
                result.append((name, option))
            }
        }
        return result
    }

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

/// `--experimental-dump-help` printed something that is not the JSON swift-argument-parser writes.
public struct HelpDumpError: Error, CustomStringConvertible {
    public var dump: String
    public var description: String { "--experimental-dump-help did not print its JSON: \(dump)" }
}
