import Foundation

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Decoding JSON with Python's rule for repeated keys.
public enum JSONLastKeyWins {
    /// `data` re-encoded so that each object keeps the last value of a repeated key (Python's `json`, serde,
    /// `JSONSerialization`); `JSONDecoder` would keep the first. Numbers keep their value exactly
    /// (re-encoded with the shortest representation that round-trips). Malformed JSON comes back as it is,
    /// for the decoder to report in its own words.
    public static func normalized(_ data: Data) -> Data {
        guard let object = try? JSONSerialization.jsonObject(with: data, options: .fragmentsAllowed),
              let normalized = try? JSONSerialization.data(withJSONObject: object, options: .fragmentsAllowed) else { return data }
        return normalized
    }

    /// Whether `data` may hold one of `keys` more than once as an object key: it names one of them twice
    /// (anywhere, strings included), or holds a backslash (an escaped key could spell one). One pass over the
    /// bytes, so a reader can call ``normalized(_:)`` only when it matters (it costs a parse and a write).
    public static func mayRepeat(_ keys: [String], in data: Data) -> Bool {
        let patterns = keys.map { Array("\"\($0)\"".utf8) }
        var counts = [Int](repeating: 0, count: patterns.count)
        return data.withUnsafeBytes { (bytes: UnsafeRawBufferPointer) -> Bool in
            guard let base = bytes.baseAddress else { return false }
            if memchr(base, Int32(UInt8(ascii: "\\")), bytes.count) != nil { return true }
            var offset = 0
            while offset < bytes.count, let quote = memchr(base + offset, Int32(UInt8(ascii: "\"")), bytes.count - offset) {
                let at = base.distance(to: UnsafeRawPointer(quote))
                for (k, pattern) in patterns.enumerated() where at + pattern.count <= bytes.count
                    && pattern.withUnsafeBytes({ memcmp(base + at, $0.baseAddress!, pattern.count) == 0 }) {
                    counts[k] += 1
                    if counts[k] > 1 { return true }
                }
                offset = at + 1
            }
            return false
        }
    }
}
