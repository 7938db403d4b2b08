/// JSON text written by hand, byte for byte the way serde_json writes it (the safetensors header,
/// HF's `tokenizer.json`), for files whose exact bytes matter.
public enum JSONText {
    /// `string` as a JSON string literal: `"`, `\` and control characters escaped, everything else
    /// (including non-ASCII) verbatim.
    public static func string(_ string: String) -> String {
        var result = "\""
        for scalar in string.unicodeScalars {
            switch scalar {
            case "\"": result += "\\\""
            case "\\": result += "\\\\"
            case "\n": result += "\\n"
            case "\r": result += "\\r"
            case "\t": result += "\\t"
            case "\u{08}": result += "\\b"
            case "\u{0C}": result += "\\f"
            case _ where scalar.value < 0x20:
                result += "\\u00" + String(scalar.value, radix: 16).leftPadded(to: 2)
            default: result.unicodeScalars.append(scalar)
            }
        }
        return result + "\""
    }
}
