/// The pre-tokenization regexes this package recognises, each replaced by a hand-written scanner.
///
/// HF `tokenizers` runs these patterns with oniguruma (leftmost-first alternation, backtracking). Every
/// character is a letter, a number, whitespace or "other" (see `ScalarClass`), and each pattern has an
/// alternative for each class, so a match starts at every position and the matches tile the text. The
/// scanners below compute, for a start position, the end of the match oniguruma would return, by walking
/// the alternatives in order. Each pattern's derivation is written next to its scanner.
enum SplitRegex: Sendable, Equatable, CustomStringConvertible {
    /// GPT-2's `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`
    /// (also the regex of HF's `ByteLevel` pre-tokenizer with `use_regex`).
    case gpt2
    /// Llama 3 (tiktoken cl100k): `(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|
    /// ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`.
    case llama3
    /// Qwen2: the Llama-3 pattern with `\p{N}` (single digits) instead of `\p{N}{1,3}`.
    case qwen2

    static let gpt2Pattern = #"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"#
    static let llama3Pattern =
        #"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"#
    static let qwen2Pattern =
        #"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"#

    /// The scanner for a `Split` pattern string, recognised by its exact text; nil when unknown.
    init?(pattern: String) {
        switch pattern {
        case Self.gpt2Pattern: self = .gpt2
        case Self.llama3Pattern: self = .llama3
        case Self.qwen2Pattern: self = .qwen2
        default: return nil
        }
    }

    var description: String {
        switch self {
        case .gpt2: return "GPT-2 regex"
        case .llama3: return "Llama-3 regex"
        case .qwen2: return "Qwen2 regex"
        }
    }

    /// The end (exclusive byte index) of the match that starts at `start` in `bytes[..<end]`.
    @inline(__always)
    func matchEnd(_ bytes: UnsafeBufferPointer<UInt8>, from start: Int, to end: Int) -> Int {
        switch self {
        case .gpt2: return Self.gpt2MatchEnd(bytes, start, end)
        case .llama3: return Self.llamaMatchEnd(bytes, start, end, maximumDigits: 3)
        case .qwen2: return Self.llamaMatchEnd(bytes, start, end, maximumDigits: 1)
        }
    }

    /// Calls `body(start, end)` for each match in `bytes`, in order; the matches tile the buffer.
    @inline(__always)
    func forEachMatch(in bytes: UnsafeBufferPointer<UInt8>, _ body: (Int, Int) -> Void) {
        var position = 0
        let count = bytes.count
        while position < count {
            let end = matchEnd(bytes, from: position, to: count)
            body(position, end)
            position = end
        }
    }

    // MARK: - Scanners

    /// End of the run of scalars of class `kind` that starts at `start`.
    @inline(__always)
    private static func runEnd(_ bytes: UnsafeBufferPointer<UInt8>, _ start: Int, _ end: Int, _ kind: ScalarClass) -> Int {
        var position = start
        while position < end {
            let (value, length) = UTF8Walk.scalar(bytes, at: position)
            if UnicodeClasses.classify(value) != kind { break }
            position += length
        }
        return position
    }

    /// End of `'s|'t|'re|'ve|'m|'ll|'d` given that an apostrophe ends at `start`; nil when none matches.
    /// Case-insensitive (`(?i:…)`) matching follows oniguruma's Unicode case folding, under which
    /// U+017F LATIN SMALL LETTER LONG S folds to `s` (verified against HF: `'ſ` is a contraction).
    @inline(__always)
    private static func contractionEnd(
        _ bytes: UnsafeBufferPointer<UInt8>, _ start: Int, _ end: Int, caseInsensitive: Bool
    ) -> Int? {
        guard start < end else { return nil }
        let fold: UInt8 = caseInsensitive ? 0x20 : 0
        let first = bytes[start] | fold
        switch first {
        case UInt8(ascii: "s"), UInt8(ascii: "t"), UInt8(ascii: "m"), UInt8(ascii: "d"):
            return start + 1
        case UInt8(ascii: "r"), UInt8(ascii: "v"):
            if start + 1 < end, bytes[start + 1] | fold == UInt8(ascii: "e") { return start + 2 }
            return nil
        case UInt8(ascii: "l"):
            if start + 1 < end, bytes[start + 1] | fold == UInt8(ascii: "l") { return start + 2 }
            return nil
        default:
            if caseInsensitive, bytes[start] == 0xC5, start + 1 < end, bytes[start + 1] == 0xBF { return start + 2 }
            return nil
        }
    }

    /// GPT-2. At `start`, in alternative order:
    /// 1. `'s|'t|'re|'ve|'m|'ll|'d` (case-sensitive).
    /// 2–4. ` ?\p{L}+`, ` ?\p{N}+`, ` ?[^\s\p{L}\p{N}]+`: an optional U+0020 then a maximal run of one class.
    ///    A space followed by a non-space takes that character's class; a character of class letter,
    ///    number or other starts its own run.
    /// 5. `\s+(?!\S)`: the maximal whitespace run [start, j); at the end of the text it matches whole;
    ///    otherwise text[j] is not whitespace, so the regex backtracks one scalar and matches [start, j - 1
    ///    scalar) if that is not empty.
    /// 6. `\s+`: a single whitespace scalar followed by a non-space: [start, j).
    @inline(__always)
    private static func gpt2MatchEnd(_ bytes: UnsafeBufferPointer<UInt8>, _ start: Int, _ end: Int) -> Int {
        let (first, firstLength) = UTF8Walk.scalar(bytes, at: start)
        if first == 0x27, let contraction = contractionEnd(bytes, start + 1, end, caseInsensitive: false) {
            return contraction
        }
        let afterFirst = start + firstLength
        if first == 0x20, afterFirst < end {
            let nextClass = UnicodeClasses.classify(UTF8Walk.scalar(bytes, at: afterFirst).value)
            if nextClass != .whitespace { return runEnd(bytes, afterFirst, end, nextClass) }
        }
        let firstClass = UnicodeClasses.classify(first)
        if firstClass != .whitespace { return runEnd(bytes, start, end, firstClass) }
        let whitespaceEnd = runEnd(bytes, afterFirst, end, .whitespace)
        if whitespaceEnd == end { return end }
        let backtracked = UTF8Walk.previousStart(bytes, before: whitespaceEnd)
        return backtracked > start ? backtracked : whitespaceEnd
    }

    /// Llama 3 / Qwen2. At `start`, in alternative order:
    /// 1. `(?i:'s|'t|'re|'ve|'m|'ll|'d)`.
    /// 2. `[^\r\n\p{L}\p{N}]?\p{L}+`: a letter run, optionally preceded by one scalar that is neither
    ///    CR, LF, letter nor number (so a space, tab, other whitespace, punctuation or mark).
    /// 3. `\p{N}{1,3}` (Llama 3) or `\p{N}` (Qwen2).
    /// 4. ` ?[^\s\p{L}\p{N}]+[\r\n]*`: optional U+0020, a run of "other", then any CR/LF.
    /// 5. `\s*[\r\n]+`: with [start, j) the maximal whitespace run, backtracking gives the match ending
    ///    just after the last CR or LF in the run (none: no match). CR and LF bytes never occur inside a
    ///    multi-byte scalar, so the search walks bytes.
    /// 6. `\s+(?!\S)` and 7. `\s+` as for GPT-2.
    @inline(__always)
    private static func llamaMatchEnd(
        _ bytes: UnsafeBufferPointer<UInt8>, _ start: Int, _ end: Int, maximumDigits: Int
    ) -> Int {
        let (first, firstLength) = UTF8Walk.scalar(bytes, at: start)
        if first == 0x27, let contraction = contractionEnd(bytes, start + 1, end, caseInsensitive: true) {
            return contraction
        }
        let firstClass = UnicodeClasses.classify(first)
        if firstClass == .letter { return runEnd(bytes, start, end, .letter) }
        let afterFirst = start + firstLength
        let nextClass: ScalarClass? =
            afterFirst < end ? UnicodeClasses.classify(UTF8Walk.scalar(bytes, at: afterFirst).value) : nil
        if first != 0x0D, first != 0x0A, firstClass != .number, nextClass == .letter {
            return runEnd(bytes, afterFirst, end, .letter)
        }
        if firstClass == .number {
            var position = afterFirst
            var digits = 1
            while digits < maximumDigits, position < end {
                let (value, length) = UTF8Walk.scalar(bytes, at: position)
                if UnicodeClasses.classify(value) != .number { break }
                position += length
                digits += 1
            }
            return position
        }
        if firstClass == .other || (first == 0x20 && nextClass == .other) {
            var position = runEnd(bytes, firstClass == .other ? start : afterFirst, end, .other)
            while position < end, bytes[position] == 0x0D || bytes[position] == 0x0A { position += 1 }
            return position
        }
        // Whitespace.
        let whitespaceEnd = runEnd(bytes, afterFirst, end, .whitespace)
        var position = whitespaceEnd
        while position > start {
            position -= 1
            if bytes[position] == 0x0A || bytes[position] == 0x0D { return position + 1 }
        }
        if whitespaceEnd == end { return end }
        let backtracked = UTF8Walk.previousStart(bytes, before: whitespaceEnd)
        return backtracked > start ? backtracked : whitespaceEnd
    }
}
