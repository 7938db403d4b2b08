import Foundation

/// A supported HF normalizer step: the four Unicode normalization forms.
///
/// HF applies the normalizer to the text between added tokens that are not `normalized` (special tokens
/// are matched on the raw text first). Other normalizers (Lowercase, Strip, Replace, Prepend, BertNormalizer,
/// Precompiled, …) are refused at load time.
///
/// HF `tokenizers` normalizes with the `unicode-normalization-alignments` crate, whose tables are those of
/// Unicode 9.0: every scalar assigned later has, for HF, no decomposition, no composition and combining
/// class 0 (measured: HF knows all 64 decomposable or combining scalars of Unicode 9.0 and none of the 239
/// of Unicode 10–16). Foundation's tables are newer, so the text is cut at scalars newer than Unicode 9.0,
/// which are kept as they are, and only the runs between them are normalized. This equals HF because a
/// scalar that is a starter without compositions splits normalization into independent runs, and the
/// Unicode stability policy fixes the mappings of the older scalars.
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

    /// Whether HF's Unicode 9.0 normalization tables know `scalar` (unassigned scalars are inert either way).
    static func isKnownToHF(_ scalar: Unicode.Scalar) -> Bool {
        guard let age = scalar.properties.age else { return true }
        return age.major < 10
    }

    /// Applies `steps` in order to UTF-8 bytes, as HF does; returns the normalized UTF-8.
    static func apply(_ steps: [NormalizerStep], to bytes: UnsafeBufferPointer<UInt8>) -> [UInt8] {
        // ASCII is invariant under every normalization form.
        if steps.isEmpty || bytes.allSatisfy({ $0 < 0x80 }) { return Array(bytes) }
        var result: [UInt8] = []
        result.reserveCapacity(bytes.count)
        var run = String.UnicodeScalarView()
        func flushRun() {
            guard !run.isEmpty else { return }
            var text = String(run)
            for step in steps { text = step.apply(text) }
            result.append(contentsOf: text.utf8)
            run = String.UnicodeScalarView()
        }
        for scalar in String(decoding: bytes, as: UTF8.self).unicodeScalars {
            if isKnownToHF(scalar) {
                run.append(scalar)
            } else {
                flushRun()
                UTF8.encode(scalar) { result.append($0) }
            }
        }
        flushRun()
        return result
    }
}
