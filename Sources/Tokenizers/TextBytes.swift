/// The byte rules for text this project reads (data files, stdin, `--prompt`, chat input, tokenizer files).
///
/// - Text is UTF-8, decoded strictly, as Python's `bytes.decode("utf-8")` does: an invalid sequence
///   (a stray continuation byte, an overlong form, a surrogate, a truncated sequence) is an error naming
///   the source, the line and the byte offset, never silently replaced by U+FFFD.
/// - Text given to the tokenizer keeps every byte: a leading U+FEFF (byte-order mark) and `\r\n` line
///   ends are encoded like any other characters, as HF `tokenizers` encodes the `str` that Python's
///   `open(path, encoding="utf-8").read()` returns (Foundation's `String(data:encoding:)` would drop
///   the BOM).
/// - A byte-order mark at the very start of a JSON or JSONL data file is an encoding signature, not
///   content: it is skipped (RFC 8259 §8.1 lets parsers ignore it; `json.loads(bytes)` and HF `datasets`
///   do). Anywhere else outside a JSON string it is a JSON syntax error.
public enum TextBytes {
    /// UTF-8's encoding of U+FEFF.
    public static let byteOrderMark: [UInt8] = [0xEF, 0xBB, 0xBF]

    /// Whether `bytes` begins with the UTF-8 byte-order mark.
    public static func startsWithByteOrderMark(_ bytes: some Collection<UInt8>) -> Bool {
        bytes.starts(with: byteOrderMark)
    }

    /// The offset of the first byte of the first invalid UTF-8 sequence, or nil when all of `bytes` is valid.
    public static func firstInvalidUTF8(in bytes: some Collection<UInt8>) -> Int? {
        firstInvalidSequence(in: bytes)?.offset
    }

    /// The offset and length of the first invalid UTF-8 sequence (as the decoder delimits it), or nil.
    static func firstInvalidSequence(in bytes: some Collection<UInt8>) -> (offset: Int, length: Int)? {
        var parser = Unicode.UTF8.ForwardParser()
        var iterator = bytes.makeIterator()
        var offset = 0
        while true {
            switch parser.parseScalar(from: &iterator) {
            case .valid(let encoded): offset += encoded.count
            case .emptyInput: return nil
            case .error(let length): return (offset, length)
            }
        }
    }

    /// `bytes` as a String, every byte kept (a BOM too); throws ``InvalidUTF8Error`` at the first
    /// invalid sequence. `source` names the input in the error (a path, `standard input`, `argument 3`);
    /// `countsLines: false` leaves the line number out of the message (a command-line argument).
    public static func decode(_ bytes: [UInt8], source: String, countsLines: Bool = true) throws(InvalidUTF8Error) -> String {
        if let text = String(validating: bytes, as: UTF8.self) { return text }
        var error = InvalidUTF8Error(source: source, bytes: bytes)
        if !countsLines { error.line = nil }
        throw error
    }

    /// Throws ``InvalidUTF8Error`` if `bytes` is not valid UTF-8 (the check for a file parsed as JSON).
    public static func validate(_ bytes: [UInt8], source: String) throws(InvalidUTF8Error) {
        if String(validating: bytes, as: UTF8.self) != nil { return }
        throw InvalidUTF8Error(source: source, bytes: bytes)
    }
}

/// Bytes that are not UTF-8: where (line counted from 1, byte offset from 0 in the whole input) and which bytes.
public struct InvalidUTF8Error: Error, CustomStringConvertible, Sendable, Equatable {
    /// A path, or `standard input`.
    public var source: String
    /// Counted from 1; nil for an input without lines (a command-line argument).
    public var line: Int?
    /// Offset of the first byte of the invalid sequence in the whole input.
    public var byteOffset: Int
    /// The invalid sequence (1 to 3 bytes, as the decoder delimits it).
    public var found: [UInt8]

    public init(source: String, line: Int?, byteOffset: Int, found: [UInt8]) {
        self.source = source
        self.line = line
        self.byteOffset = byteOffset
        self.found = found
    }

    /// The error for the first invalid sequence of `bytes` (which must hold one).
    init(source: String, bytes: [UInt8]) {
        let (offset, length) = TextBytes.firstInvalidSequence(in: bytes) ?? (0, 1)
        let line = 1 + bytes[..<offset].reduce(0) { $0 + ($1 == 0x0A ? 1 : 0) }
        self.init(source: source, line: line, byteOffset: offset, found: Array(bytes[offset..<min(bytes.count, offset + max(1, length))]))
    }

    public var description: String {
        let hex = found.map { "0x" + String($0, radix: 16, uppercase: true) }.joined(separator: " ")
        return "\(source)\(line.map { ":\($0)" } ?? ""): invalid UTF-8 at byte offset \(byteOffset) (\(hex)): text must be UTF-8 (bytes are never replaced)"
    }
}
