/// GPT-2's reversible map between the 256 byte values and 256 printable Unicode characters.
///
/// Bytes `!`…`~`, `¡`…`¬` and `®`…`ÿ` stand for themselves; the other 68 bytes (controls, space, DEL,
/// NBSP, soft hyphen) are given U+0100, U+0101, … in byte order. So a space is `Ġ` (U+0120) and a
/// newline `Ċ` (U+010A). This is `bytes_to_unicode()` of GPT-2's `encoder.py` and HF's `BYTES_CHAR`.
enum ByteLevelAlphabet {
    /// The character (Unicode scalar value) standing for each byte.
    static let scalarForByte: [UInt32] = {
        var table = [UInt32](repeating: 0, count: 256)
        var next: UInt32 = 256
        for byte in 0..<256 {
            if (0x21...0x7E).contains(byte) || (0xA1...0xAC).contains(byte) || (0xAE...0xFF).contains(byte) {
                table[byte] = UInt32(byte)
            } else {
                table[byte] = next
                next += 1
            }
        }
        return table
    }()

    /// The UTF-8 of the character standing for each byte.
    static let utf8ForByte: [[UInt8]] = scalarForByte.map { value in
        var encoded: [UInt8] = []
        UTF8.encode(Unicode.Scalar(value)!) { encoded.append($0) }
        return encoded
    }

    /// The byte a character stands for, or nil when the character is not in the alphabet.
    static func byte(forScalar value: UInt32) -> UInt8? {
        if value < 256 {
            let byte = Int(value)
            if (0x21...0x7E).contains(byte) || (0xA1...0xAC).contains(byte) || (0xAE...0xFF).contains(byte) {
                return UInt8(byte)
            }
            return nil
        }
        guard value < 256 + 68 else { return nil }
        return byteForExtendedScalar[Int(value - 256)]
    }

    private static let byteForExtendedScalar: [UInt8] = {
        var table = [UInt8](repeating: 0, count: 68)
        for byte in 0..<256 where scalarForByte[byte] >= 256 {
            table[Int(scalarForByte[byte] - 256)] = UInt8(byte)
        }
        return table
    }()

    /// The bytes a token string stands for when every character of it is in the alphabet; nil otherwise.
    /// (HF's ByteLevel decoder falls back to the token's own UTF-8 in the nil case.)
    static func bytes(ofToken token: String) -> [UInt8]? {
        var result: [UInt8] = []
        result.reserveCapacity(token.utf8.count)
        for scalar in token.unicodeScalars {
            guard let byte = byte(forScalar: scalar.value) else { return nil }
            result.append(byte)
        }
        return result
    }

    /// The byte-level token string for raw bytes (e.g. `" the"` → `"Ġthe"`).
    static func token(forBytes bytes: some Sequence<UInt8>) -> String {
        var utf8: [UInt8] = []
        for byte in bytes { utf8.append(contentsOf: utf8ForByte[Int(byte)]) }
        return String(decoding: utf8, as: UTF8.self)
    }
}
