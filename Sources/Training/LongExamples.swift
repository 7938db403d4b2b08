/// What happens to an example longer than `--seq-len` (`--long-examples`).
public enum LongExamplePolicy: String, Sendable, Codable, Equatable, CaseIterable {
    /// Cut to its first `--seq-len` tokens when packed (the default; counted, the first such record named).
    case truncate
    /// Cut at turn boundaries into several examples that each fit (``LongExamples/split(_:at:limit:)``).
    case split
    /// Left out (counted, the first such record named).
    case drop
    /// Refused: loading stops at the first such record, naming it.
    case error
}

/// Token offsets where a tokenized conversation can be cut so that each slice is exactly what the chat
/// template's tokenization of those messages gives (``ChatEncoder/turnBoundaries(_:ids:)``).
public struct TurnBoundaries: Sendable, Equatable {
    /// Tokens before the first non-system message (BOS, the system prompt, a default system prompt):
    /// every piece starts with them.
    public var prefixEnd: Int
    /// Where a piece's trained part may start: the first non-system message and every message that follows
    /// an assistant message (a *turn* is the prompt messages and the assistant answer after them).
    /// Increasing; the first is `prefixEnd`.
    public var turnStarts: [Int]
    /// Where a piece's context may start: every non-system message that starts at a token boundary with an
    /// added (special) token. Increasing; includes every turn start.
    public var messageStarts: [Int]

    public init(prefixEnd: Int, turnStarts: [Int], messageStarts: [Int]) {
        self.prefixEnd = prefixEnd
        self.turnStarts = turnStarts
        self.messageStarts = messageStarts
    }
}

/// Cutting multi-turn conversations that exceed the sequence length into pieces that fit.
public enum LongExamples {
    /// Cuts `example` (a whole tokenized conversation) at `boundaries` into pieces of at most `limit`
    /// tokens. Each piece is the prefix (system prompt), then as many earlier messages as fit as context
    /// (labels -100), then one or more whole turns whose labels are kept: every turn is trained in exactly
    /// one piece, so no supervised token is lost unless one turn with the prefix alone exceeds `limit`. Such
    /// a turn first loses its leading messages (its prompt) while its last message (the answer) does not
    /// fit, then what still exceeds `limit` is cut there; such pieces are counted in `truncatedPieces`. The prefix keeps its labels in the first
    /// piece only. Pieces are token slices of the whole conversation: `ids[0..<prefixEnd] +
    /// ids[context..<end]`, which at these boundaries equals the tokenization of the template applied to
    /// (system + the context and turn messages), as HF would give it. Pieces without a supervised token are
    /// left out.
    public static func split(_ example: SFTExample, at boundaries: TurnBoundaries, limit: Int)
        -> (pieces: [SFTExample], truncatedPieces: Int)
    {
        let ids = example.inputIDs, labels = example.labels, prefix = boundaries.prefixEnd
        let units = boundaries.turnStarts + [ids.count]
        var pieces: [SFTExample] = [], truncated = 0
        var first = 0
        while first < units.count - 1 {
            // The turns first..<last: as many as fit after the prefix (at least one).
            var last = first + 1
            while last < units.count - 1 && prefix + units[last + 1] - units[first] <= limit { last += 1 }
            let start = units[first], end = units[last]
            // The earliest message start that still fits as context (`start` itself when nothing more fits).
            // When the turn alone does not fit, it loses its first messages (the prompt, not trained) down to
            // its last one (the answer), and only then is cut at `limit`.
            let context = boundaries.messageStarts.first { $0 <= start && prefix + end - $0 <= limit }
                ?? boundaries.messageStarts.first { $0 > start && $0 < end && prefix + end - $0 <= limit }
                ?? boundaries.messageStarts.last { $0 >= start && $0 < end } ?? start
            var pieceIDs = Array(ids[0..<prefix]) + ids[context..<end]
            var pieceLabels = (first == 0 ? Array(labels[0..<prefix]) : [Int32](repeating: -100, count: prefix))
                + [Int32](repeating: -100, count: max(0, start - context)) + labels[max(start, context)..<end]
            if prefix + end - start > limit { truncated += 1 }
            if pieceIDs.count > limit {
                pieceIDs.removeLast(pieceIDs.count - limit)
                pieceLabels.removeLast(pieceLabels.count - limit)
            }
            let piece = SFTExample(inputIDs: pieceIDs, labels: pieceLabels)
            if piece.supervisedCount > 0 { pieces.append(piece) }
            first = last
        }
        return (pieces, truncated)
    }

    /// Supervised tokens within the first `limit` positions: what truncation keeps of `example`.
    public static func supervisedWithin(_ example: SFTExample, limit: Int) -> Int {
        example.labels.prefix(limit).dropFirst().reduce(0) { $0 + ($1 == -100 ? 0 : 1) }
    }
}
