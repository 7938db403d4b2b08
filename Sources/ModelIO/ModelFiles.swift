import Checkpoints
import Foundation

/// The files of one model directory, listed once, each read at most once.
///
/// `--model DIR` touches several small files: `config.json`, `generation_config.json`, the tokenizer
/// files, the chat template. The resolver, the tokenizer and the exporter all ask this value for their
/// bytes, so a process opens each of them once however many of these need it (an export copies the
/// bytes it already holds). Weights are not read through here: they are memory-mapped by their readers.
///
/// Not thread-safe: it is filled on the main thread while resolving `--model`, before any MPI work.
public final class ModelFiles {
    /// The directory (as given, not resolved through symbolic links).
    public let directory: URL
    /// The names of the directory's entries, sorted.
    public let names: [String]
    private var contents: [String: Data] = [:]

    /// Lists `directory`; throws `ModelSourceError` when it cannot be listed.
    public init(directory: URL) throws {
        self.directory = directory
        do {
            names = try FileManager.default.contentsOfDirectory(atPath: directory.path).sorted()
        } catch {
            throw ModelSourceError(path: directory.path, message: "cannot list the directory: \(error.localizedDescription)")
        }
    }

    /// Whether the directory has an entry called `name`.
    public func contains(_ name: String) -> Bool { names.contains(name) }

    /// The URL of entry `name` (whether or not it exists).
    public func url(_ name: String) -> URL { directory.appendingPathComponent(name) }

    /// The entries whose name ends with `suffix` (case-insensitive), sorted.
    public func names(endingWith suffix: String) -> [String] {
        names.filter { $0.lowercased().hasSuffix(suffix.lowercased()) }
    }

    /// The bytes of entry `name`, read on first use and kept; nil when there is no such entry.
    /// Throws `ModelSourceError` naming the file when it exists but cannot be read.
    public func data(_ name: String) throws -> Data? {
        if let data = contents[name] { return data }
        guard contains(name) else { return nil }
        let data = Data(try FileContents.read(url(name).path))
        contents[name] = data
        return data
    }
}

/// `--model` names nothing usable, or a model directory lacks what it needs; says what was found.
public struct ModelSourceError: Error, CustomStringConvertible, Sendable, Equatable {
    /// The `--model` value or the file at fault.
    public var path: String
    public var message: String
    public var description: String { "\(path): \(message)" }

    public init(path: String, message: String) {
        self.path = path
        self.message = message
    }
}
