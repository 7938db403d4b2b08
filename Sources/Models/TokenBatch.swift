/// The tokens one micro-step computes on one rank: packed examples, one after another.
///
/// `targets[t]` is the token that position `t` must predict (the label of position `t + 1` of the
/// same example), or `-100`. `positions` restart at 0 for each example; `boundaries` lists where each
/// example starts and ends (`[0, …, count]`), so attention never crosses examples.
public struct TokenBatch: Sendable, Equatable {
    public var tokens: [Int32]
    public var positions: [Int32]
    public var targets: [Int32]
    public var boundaries: [Int]

    public init(tokens: [Int32], positions: [Int32], targets: [Int32], boundaries: [Int]) {
        precondition(tokens.count == positions.count && tokens.count == targets.count && boundaries.first == 0 && boundaries.last == tokens.count,
                     "TokenBatch: inconsistent sizes")
        self.tokens = tokens
        self.positions = positions
        self.targets = targets
        self.boundaries = boundaries
    }

    public static let empty = TokenBatch(tokens: [], positions: [], targets: [], boundaries: [0])

    /// Packs examples given as `(input_ids, labels)` in HF's unshifted convention (`labels[t]` is
    /// trained at position `t`, `-100` where not), shifting labels by one within each example.
    public init(examples: [(inputIDs: [Int32], labels: [Int32])]) {
        var tokens: [Int32] = [], positions: [Int32] = [], targets: [Int32] = [], boundaries = [0]
        for (ids, labels) in examples {
            precondition(ids.count == labels.count, "TokenBatch: input_ids and labels differ in length")
            tokens += ids
            positions += (0..<ids.count).map(Int32.init)
            targets += labels.dropFirst()
            if !ids.isEmpty { targets.append(-100) }
            boundaries.append(tokens.count)
        }
        self.init(tokens: tokens, positions: positions, targets: targets, boundaries: boundaries)
    }

    public var count: Int { tokens.count }
    /// Positions with a label: what the loss is summed over.
    public var supervisedCount: Int { targets.reduce(0) { $0 + ($1 == -100 ? 0 : 1) } }
    public var longestExample: Int { zip(boundaries.dropFirst(), boundaries).map { $0 - $1 }.max() ?? 0 }
}
