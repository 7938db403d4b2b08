/// The character classes the pre-tokenizer regexes test, for one Unicode scalar.
///
/// The classes are disjoint and cover every scalar, which is what lets the scanners in
/// `PreTokenizerScanners.swift` replace the alternations of the GPT-2 / Llama-3 / Qwen2 regexes:
/// - `letter`: `\p{L}`, general categories Lu, Ll, Lt, Lm, Lo.
/// - `number`: `\p{N}`, general categories Nd, Nl, No (also Rust's `char::is_numeric`, used by `Digits`).
/// - `whitespace`: `\s` of oniguruma (HF's regex engine) with Unicode: U+0009–U+000D, U+0085 and the
///   categories Zs, Zl, Zp — which is exactly the Unicode `White_Space` property (Rust `regex`'s `\s`).
/// - `other`: everything else (`[^\s\p{L}\p{N}]`): punctuation, symbols, marks, controls, format characters.
enum ScalarClass: UInt8 {
    case letter
    case number
    case whitespace
    case other
}

/// Unicode scalar classification used by the pre-tokenizers and added-token options.
enum UnicodeClasses {
    /// The class of `value` (a valid Unicode scalar value).
    @inline(__always)
    static func classify(_ value: UInt32) -> ScalarClass {
        if value < 0x80 {
            if value &- 0x61 < 26 || value &- 0x41 < 26 { return .letter }
            if value &- 0x30 < 10 { return .number }
            if value == 0x20 || value &- 0x09 < 5 { return .whitespace }
            return .other
        }
        return classifyNonASCII(value)
    }

    @inline(never)
    static func classifyNonASCII(_ value: UInt32) -> ScalarClass {
        if isWhitespace(value) { return .whitespace }
        guard let scalar = Unicode.Scalar(value) else { return .other }
        switch scalar.properties.generalCategory {
        case .uppercaseLetter, .lowercaseLetter, .titlecaseLetter, .modifierLetter, .otherLetter:
            return .letter
        case .decimalNumber, .letterNumber, .otherNumber:
            return .number
        default:
            return .other
        }
    }

    /// Unicode `White_Space` (stable since Unicode 6.3; equal to oniguruma's Unicode `\s`).
    @inline(__always)
    static func isWhitespace(_ value: UInt32) -> Bool {
        switch value {
        case 0x09...0x0D, 0x20, 0x85, 0xA0, 0x1680, 0x2000...0x200A, 0x2028, 0x2029, 0x202F, 0x205F, 0x3000:
            return true
        default:
            return false
        }
    }

    /// Rust `regex`'s Unicode `\w`: Alphabetic, marks (Mn, Mc, Me), Nd, Pc and Join_Control.
    /// HF uses it for the `single_word` option of added tokens.
    static func isWordCharacter(_ value: UInt32) -> Bool {
        if value < 0x80 {
            return value &- 0x61 < 26 || value &- 0x41 < 26 || value &- 0x30 < 10 || value == 0x5F
        }
        guard let scalar = Unicode.Scalar(value) else { return false }
        let properties = scalar.properties
        if properties.isAlphabetic || properties.isJoinControl { return true }
        switch properties.generalCategory {
        case .nonspacingMark, .spacingMark, .enclosingMark, .decimalNumber, .connectorPunctuation:
            return true
        default:
            return false
        }
    }
}

/// Decoding and stepping through UTF-8 that is known to be valid (it comes from a Swift `String`).
enum UTF8Walk {
    /// The scalar starting at `index` and its length in bytes.
    @inline(__always)
    static func scalar(_ bytes: UnsafeBufferPointer<UInt8>, at index: Int) -> (value: UInt32, length: Int) {
        let b0 = UInt32(bytes[index])
        if b0 < 0x80 { return (b0, 1) }
        if b0 < 0xE0 {
            return ((b0 & 0x1F) << 6 | UInt32(bytes[index + 1] & 0x3F), 2)
        }
        if b0 < 0xF0 {
            return ((b0 & 0x0F) << 12 | UInt32(bytes[index + 1] & 0x3F) << 6 | UInt32(bytes[index + 2] & 0x3F), 3)
        }
        return (
            (b0 & 0x07) << 18 | UInt32(bytes[index + 1] & 0x3F) << 12 | UInt32(bytes[index + 2] & 0x3F) << 6
                | UInt32(bytes[index + 3] & 0x3F), 4
        )
    }

    /// The start of the scalar that ends at `index` (exclusive).
    @inline(__always)
    static func previousStart(_ bytes: UnsafeBufferPointer<UInt8>, before index: Int) -> Int {
        var position = index - 1
        while position > 0, bytes[position] & 0xC0 == 0x80 { position -= 1 }
        return position
    }
}
