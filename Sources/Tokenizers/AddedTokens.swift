/// A token added on top of the BPE vocabulary (HF `AddedToken`): matched in the text before
/// pre-tokenization and given its id directly.
public struct AddedToken: Sendable, Equatable {
    /// The exact text of the token, e.g. `<|im_end|>`.
    public var content: String
    public var id: Int
    /// Skipped by `decode(_:skipSpecialTokens: true)` and listed in `specialTokens`.
    public var special: Bool
    /// Only matched when not preceded or followed by a word character (`\w`).
    public var singleWord: Bool
    /// Also consumes the whitespace before it.
    public var leftStrip: Bool
    /// Also consumes the whitespace after it.
    public var rightStrip: Bool
    /// Matched against the normalized text (after the normalizer) instead of the raw text.
    public var normalized: Bool

    public init(
        content: String, id: Int, special: Bool, singleWord: Bool = false, leftStrip: Bool = false,
        rightStrip: Bool = false, normalized: Bool = false
    ) {
        self.content = content
        self.id = id
        self.special = special
        self.singleWord = singleWord
        self.leftStrip = leftStrip
        self.rightStrip = rightStrip
        self.normalized = normalized
    }
}

/// A piece of text after added-token extraction: either an added token's id or text still to encode.
enum TextSegment {
    case token(Int)
    case text(Range<Int>)
}

/// Finds added tokens in text the way HF's `AddedVocabulary::find_matches` does.
///
/// The patterns are matched with leftmost-longest semantics (HF builds an Aho-Corasick automaton with
/// `MatchKind::LeftmostLongest`): at the leftmost position where any token occurs, the longest token
/// wins, and the search resumes after it. Then, per match: `single_word` discards a match touching a
/// `\w` character; `lstrip` extends it left over whitespace (not past the previous match); `rstrip`
/// extends it right over whitespace. The text between matches is returned as text segments.
struct AddedTokenMatcher: Sendable {
    private struct Node: Sendable {
        var children: [UInt8: Int32] = [:]
        /// Index into `tokens` of the token ending here, or -1.
        var token: Int32 = -1
    }

    private var nodes: [Node] = [Node()]
    private var tokens: [AddedToken] = []
    private var firstBytes = [Bool](repeating: false, count: 256)

    var isEmpty: Bool { tokens.isEmpty }

    /// - Parameter patterns: each token with the bytes to look for (its content, or its normalized content).
    init(_ patterns: [(token: AddedToken, bytes: [UInt8])]) {
        for (token, bytes) in patterns where !bytes.isEmpty {
            var node = 0
            for byte in bytes {
                if let child = nodes[node].children[byte] {
                    node = Int(child)
                } else {
                    nodes.append(Node())
                    nodes[node].children[byte] = Int32(nodes.count - 1)
                    node = nodes.count - 1
                }
            }
            if nodes[node].token < 0 {
                nodes[node].token = Int32(tokens.count)
                tokens.append(token)
            }
            firstBytes[Int(bytes[0])] = true
        }
    }

    /// The longest token starting at `start`: (end, token index), or nil.
    @inline(__always)
    private func longestMatch(_ text: UnsafeBufferPointer<UInt8>, at start: Int) -> (end: Int, token: Int)? {
        var node = 0
        var best: (end: Int, token: Int)?
        var position = start
        while position < text.count, let child = nodes[node].children[text[position]] {
            node = Int(child)
            position += 1
            if nodes[node].token >= 0 { best = (position, Int(nodes[node].token)) }
        }
        return best
    }

    /// Splits `text` (all of it, offsets relative to its start) into added tokens and text segments.
    func split(_ text: UnsafeBufferPointer<UInt8>) -> [TextSegment] {
        var segments: [TextSegment] = []
        var startOffset = 0
        var position = 0
        let count = text.count
        while position < count {
            guard firstBytes[Int(text[position])], let match = longestMatch(text, at: position) else {
                position += 1
                continue
            }
            var start = position
            var stop = match.end
            position = match.end
            let token = tokens[match.token]
            if token.singleWord {
                let startIsBoundary = start == 0 || !Self.endsWithWordCharacter(text, before: start)
                let stopIsBoundary = stop == count || !Self.startsWithWordCharacter(text, at: stop)
                if !startIsBoundary || !stopIsBoundary { continue }
            }
            if token.leftStrip {
                start = max(Self.whitespaceRunStart(text, before: start), startOffset)
            }
            if token.rightStrip {
                stop = Self.whitespaceRunEnd(text, from: stop)
            }
            if startOffset < start { segments.append(.text(startOffset..<start)) }
            segments.append(.token(token.id))
            startOffset = stop
        }
        if startOffset != count { segments.append(.text(startOffset..<count)) }
        return segments
    }

    private static func endsWithWordCharacter(_ text: UnsafeBufferPointer<UInt8>, before index: Int) -> Bool {
        let start = UTF8Walk.previousStart(text, before: index)
        return UnicodeClasses.isWordCharacter(UTF8Walk.scalar(text, at: start).value)
    }

    private static func startsWithWordCharacter(_ text: UnsafeBufferPointer<UInt8>, at index: Int) -> Bool {
        UnicodeClasses.isWordCharacter(UTF8Walk.scalar(text, at: index).value)
    }

    /// Start of the whitespace run that ends at `index` (HF: `\s*$` on the text before the token).
    private static func whitespaceRunStart(_ text: UnsafeBufferPointer<UInt8>, before index: Int) -> Int {
        var position = index
        while position > 0 {
            let previous = UTF8Walk.previousStart(text, before: position)
            if !UnicodeClasses.isWhitespace(UTF8Walk.scalar(text, at: previous).value) { break }
            position = previous
        }
        return position
    }

    /// End of the whitespace run that starts at `index` (HF: `^\s*` on the text after the token).
    private static func whitespaceRunEnd(_ text: UnsafeBufferPointer<UInt8>, from index: Int) -> Int {
        var position = index
        while position < text.count {
            let (value, length) = UTF8Walk.scalar(text, at: position)
            if !UnicodeClasses.isWhitespace(value) { break }
            position += length
        }
        return position
    }
}
