import Foundation
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The checkpoint folders of an output directory: which are complete, the latest, the temporaries
/// a killed save left, and the durable commit of a new one (fsync, rename, fsync of the parent).
public enum TrainingCheckpointDirectory {
    /// One `checkpoint-STEP` folder.
    public struct Entry: Sendable, Equatable {
        public var step: Int
        public var url: URL
        /// Nil when complete; otherwise why not (no completion marker, no manifest).
        public var problem: String?
        public var isComplete: Bool { problem == nil }
    }

    /// Every `checkpoint-STEP` folder of `directory`, by step (none if it does not exist).
    public static func entries(in directory: URL) -> [Entry] {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: directory.path)) ?? []
        return names.compactMap { name -> Entry? in
            guard let step = TrainingCheckpointFormat.step(ofDirectoryNamed: name) else { return nil }
            let url = directory.appendingPathComponent(name)
            var problem: String? = nil
            if !FileManager.default.fileExists(atPath: url.appendingPathComponent(TrainingCheckpointFormat.manifestName).path) {
                problem = "no \(TrainingCheckpointFormat.manifestName)"
            } else if !FileManager.default.fileExists(atPath: url.appendingPathComponent(TrainingCheckpointFormat.completionMarkerName).path) {
                problem = "no completion marker \(TrainingCheckpointFormat.completionMarkerName) (the save did not finish)"
            }
            return Entry(step: step, url: url, problem: problem)
        }.sorted { $0.step < $1.step }
    }

    /// The complete checkpoint of highest step, and the incomplete ones of higher step that were
    /// skipped on the way (each with its reason); temporaries (`.checkpoint-*.tmp-*`) are never candidates.
    public static func latest(in directory: URL) -> (latest: Entry?, skipped: [Entry]) {
        var skipped: [Entry] = []
        for entry in entries(in: directory).reversed() {
            if entry.isComplete { return (entry, skipped) }
            skipped.append(entry)
        }
        return (nil, skipped)
    }

    /// The temporaries of killed saves in `directory` (``TrainingCheckpointFormat/isTemporary(_:)``).
    public static func temporaries(in directory: URL) -> [URL] {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: directory.path)) ?? []
        return names.filter(TrainingCheckpointFormat.isTemporary).sorted().map { directory.appendingPathComponent($0) }
    }

    /// Removes the temporaries a killed save left; returns their names.
    @discardableResult
    public static func removeTemporaries(in directory: URL) throws -> [String] {
        var removed: [String] = []
        for url in temporaries(in: directory) {
            try FileOperation.perform("remove a leftover temporary", path: url.path) { try FileManager.default.removeItem(at: url) }
            removed.append(url.lastPathComponent)
        }
        return removed
    }

    /// Flushes a file or directory to disk. The corresponding C functions are `open` and `fsync`.
    public static func fsync(_ url: URL) throws(FileOperationError) {
        let descriptor = open(url.path, O_RDONLY | O_CLOEXEC)
        guard descriptor >= 0 else { throw failure(url, "open for fsync") }
        defer { close(descriptor) }
        #if canImport(Glibc)
        guard Glibc.fsync(descriptor) == 0 else { throw failure(url, "fsync") }
        #else
        guard Darwin.fsync(descriptor) == 0 else { throw failure(url, "fsync") }
        #endif
    }

    /// Makes `temporary` the checkpoint `final`: fsyncs every file in it and the folder, renames it
    /// (an existing `final` — a checkpoint of the same step from an earlier attempt — is first moved
    /// aside under a temporary name and removed after), and fsyncs the parent so that the rename is durable.
    public static func commit(_ temporary: URL, as final: URL) throws {
        let names = try FileOperation.perform("list", path: temporary.path) { try FileManager.default.contentsOfDirectory(atPath: temporary.path) }
        for name in names { try fsync(temporary.appendingPathComponent(name)) }
        try fsync(temporary)
        let parent = final.deletingLastPathComponent()
        var aside: URL? = nil
        if FileManager.default.fileExists(atPath: final.path) {
            let moved = parent.appendingPathComponent(".\(final.lastPathComponent).tmp-replaced-\(UInt32.random(in: 0...UInt32.max))")
            guard rename(final.path, moved.path) == 0 else { throw failure(final, "rename aside to \(moved.lastPathComponent)") }
            aside = moved
        }
        guard rename(temporary.path, final.path) == 0 else { throw failure(temporary, "rename to \(final.lastPathComponent)") }
        try fsync(parent)
        if let aside { try? FileManager.default.removeItem(at: aside) }
    }

    /// Deletes complete checkpoints beyond the newest `keep` (older incomplete ones stay for inspection);
    /// returns the steps deleted.
    @discardableResult
    public static func keepLast(_ keep: Int, in directory: URL) throws -> [Int] {
        precondition(keep >= 1, "keepLast: keep \(keep)")
        let complete = entries(in: directory).filter(\.isComplete)
        var deleted: [Int] = []
        for entry in complete.dropLast(keep) {
            try FileOperation.perform("remove an old checkpoint (--keep-last)", path: entry.url.path) { try FileManager.default.removeItem(at: entry.url) }
            deleted.append(entry.step)
        }
        return deleted
    }

    static func failure(_ url: URL, _ operation: String, code: Int32 = errno) -> FileOperationError {
        FileOperationError(path: url.path, operation: operation, reason: "\(String(cString: strerror(code))) (errno \(code))")
    }
}
