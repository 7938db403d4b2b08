import Foundation

/// A supported HF normalizer step: the four Unicode normalization forms.
///
/// HF applies the normalizer to the text between added tokens that are not `normalized` (special tokens
/// are matched on the raw text first). Other normalizers (Lowercase, Strip, Replace, Prepend, BertNormalizer,
/// Precompiled, …) are refused at load time.
enum NormalizerStep: String, Sendable, Equatable {
    case nfc = "NFC"
    case nfd = "NFD"
    case nfkc = "NFKC"
    case nfkd = "NFKD"

    func apply(_ text: String) -> String {
        switch self {
        case .nfc: return text.precomposedStringWithCanonicalMapping
        case .nfd: return text.decomposedStringWithCanonicalMapping
        case .nfkc: return text.precomposedStringWithCompatibilityMapping
        case .nfkd: return text.decomposedStringWithCompatibilityMapping
        }
    }

    /// Applies `steps` in order to UTF-8 bytes; returns the normalized UTF-8.
    static func apply(_ steps: [NormalizerStep], to bytes: UnsafeBufferPointer<UInt8>) -> [UInt8] {
        var text = String(decoding: bytes, as: UTF8.self)
        // ASCII is invariant under every normalization form.
        if bytes.allSatisfy({ $0 < 0x80 }) { return Array(bytes) }
        for step in steps { text = step.apply(text) }
        return Array(text.utf8)
    }
}
