import Foundation

/// Small files (`config.json`, `generation_config.json`, tokenizer files) written the way
/// ``SafetensorsWriter`` writes weights: into `.NAME.tmp-XXXXXX` next to the destination, `fsync`ed, then
/// renamed into place, so a full or read-only disk or a kill never leaves a half-written file under
/// the destination name, and a leftover is recognisable (``isLeftover(_:)``).
public enum AtomicFile {
    /// Writes `data` to `url` (replacing an existing file when `overwrite`).
    /// Throws `CheckpointError` `.writeFailed` naming the file, the step (`writing …`, `fsync of …`,
    /// `renaming … into place`) and the system's reason, or `.fileExists`.
    public static func write(_ data: Data, to url: URL, overwrite: Bool = true) throws {
        var output = try TemporaryOutput(destination: url.path)
        do {
            try data.withUnsafeBytes { try output.write($0) }
            try output.commit(overwrite: overwrite)
        } catch {
            output.discard()
            throw error
        }
    }

    /// Whether `name` (a file name, no directory) is a temporary file of this module's writers left
    /// by a killed save: `.` + the destination's name + `.tmp-` + `mkstemp`'s six characters.
    public static func isLeftover(_ name: String) -> Bool {
        let bytes = Array(name.utf8)
        let marker = Array(".tmp-".utf8)
        guard bytes.count > 1 + marker.count + 6, bytes[0] == UInt8(ascii: "."), !name.contains("/") else { return false }
        let suffix = bytes.suffix(6)
        let markerStart = bytes.count - 6 - marker.count
        guard markerStart > 1, Array(bytes[markerStart..<(bytes.count - 6)]) == marker else { return false }
        return suffix.allSatisfy { (UInt8(ascii: "a")...UInt8(ascii: "z")).contains($0) || (UInt8(ascii: "A")...UInt8(ascii: "Z")).contains($0)
            || (UInt8(ascii: "0")...UInt8(ascii: "9")).contains($0) }
    }

    /// Deletes this module's leftovers (``isLeftover(_:)``) directly inside `directory`; returns their names.
    @discardableResult
    public static func removeLeftovers(in directory: URL) -> [String] {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: directory.path)) ?? []
        var removed: [String] = []
        for name in names where isLeftover(name) {
            if unlink(directory.appendingPathComponent(name).path) == 0 { removed.append(name) }
        }
        return removed
    }
}
