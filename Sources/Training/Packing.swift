import Models

/// How examples are packed into rows of `--seq-len` tokens (`--packing`).
public enum PackingMethod: String, Sendable, Codable, Equatable, CaseIterable {
    /// Best-fit decreasing within shuffled windows of ``TrainingPlan/defaultWindow`` examples (the default).
    case bfd
    /// In shuffled order, an example joins the current row if it fits, else starts a new one.
    case greedy
    /// One example per row.
    case none
}

/// What preparing and packing a dataset did, for the start-up summary: nothing is dropped silently.
public struct PackingReport: Sendable, Equatable, Codable {
    public var examples = 0
    /// Examples longer than the sequence length, cut to it.
    public var truncated = 0
    /// Examples with no supervised token (after truncation): they cannot contribute to the loss.
    public var skippedUnsupervised = 0
    public var tokens = 0
    public var supervisedTokens = 0
    public var longestExample = 0
    public var packing = PackingMethod.bfd
    /// Rows of the first epoch and the fraction of their capacity (`rows × sequenceLength`) that holds tokens.
    public var rowsPerEpoch = 0
    public var fill = 0.0
    /// Row capacity of the first epoch left empty: `rows × sequenceLength − tokens` (no compute is spent on
    /// it: a micro-batch holds only real tokens; it is the share of each step's token budget left unused).
    public var paddingTokens = 0

    public var summary: String {
        var parts = ["\(examples) examples, \(tokens) tokens (\(supervisedTokens) supervised), longest \(longestExample)"]
        if truncated > 0 { parts.append("\(truncated) truncated to the sequence length") }
        if skippedUnsupervised > 0 { parts.append("\(skippedUnsupervised) skipped: no supervised token") }
        parts.append("packing \(packing.rawValue): \(rowsPerEpoch) rows per epoch, \(String(format: "%.1f", fill * 100))% filled, "
                     + "\(paddingTokens) padding tokens")
        return parts.joined(separator: "; ")
    }
}

/// Packing of examples into rows of at most `sequenceLength` tokens, and the deal of each optimizer
/// step's rows to ranks and micro-batches.
///
/// Rows are planned from the lengths of the whole dataset, identically on every rank (no communication
/// needed, no floating point, no hash-ordered collections): each epoch's example order is a seeded
/// shuffle, then ``PackingMethod`` packs it. Step `s` of an epoch takes `ranks × gradAccum ×
/// microBatchSize` consecutive rows, sorted by length and dealt to the least-loaded rank that has room,
/// then likewise to that rank's micro-batches. Every rank runs the same number of micro-steps; a missing
/// row is an empty micro-batch (zero loss). A step never spans two epochs, and the number of rows (so of
/// steps) may differ between epochs, each being packed from its own shuffle.
///
/// Tokens are read from the ``ExampleSource`` only when a micro-batch is built; an example longer than
/// `sequenceLength` is cut to its first `sequenceLength` tokens there (and counted in the report).
public struct TrainingPlan: Sendable {
    /// BFD window: examples packed together are chosen among this many consecutive ones of the shuffled
    /// order. On chatterbot at 512 (1,973 examples), BFD fills 96.4% of the rows with windows of 256, 97.3%
    /// with 512, 97.7% with 1,024 and 98.1% with 2,048 (the whole set); chitchat fills ≥ 99.4% with any of
    /// them. A larger window packs tighter and costs O(W log W) per window; a smaller one keeps the
    /// examples that share a row (and so a step) closer to the plain shuffle.
    public static let defaultWindow = 2048

    public let source: any ExampleSource
    /// Indices into `source` of the examples trained on (a supervised token within `sequenceLength`).
    public let kept: [Int]
    /// Length of each kept example after truncation, parallel to `kept`.
    let lengths: [Int]
    public let sequenceLength: Int
    public let microBatchSize: Int
    public let gradientAccumulation: Int
    public let ranks: Int
    public let seed: UInt64
    public let shuffle: Bool
    public let packing: PackingMethod
    public let window: Int
    public private(set) var report: PackingReport
    /// Rows (lists of positions in `kept`) of each epoch planned so far.
    private var epochs: [[[Int]]] = []

    /// Plans packing for `examples`. Reads every example's length and supervised count; reads the labels
    /// of examples longer than `sequenceLength` (to count what truncation keeps).
    public init(examples source: any ExampleSource, sequenceLength: Int, microBatchSize: Int, gradientAccumulation: Int,
                ranks: Int, seed: UInt64, shuffle: Bool = true, packing: PackingMethod = .bfd, window: Int = defaultWindow) {
        precondition(sequenceLength > 1 && microBatchSize > 0 && gradientAccumulation > 0 && ranks > 0 && window > 0,
                     "TrainingPlan: invalid sizes")
        var report = PackingReport()
        report.packing = packing
        var kept: [Int] = [], lengths: [Int] = []
        for index in 0..<source.count {
            report.examples += 1
            var length = source.length(index)
            var supervised = source.supervisedCount(index)
            if length > sequenceLength {
                report.truncated += 1
                length = sequenceLength
                supervised = source.example(index).labels.prefix(sequenceLength).dropFirst().reduce(0) { $0 + ($1 == -100 ? 0 : 1) }
            }
            if supervised == 0 {
                report.skippedUnsupervised += 1
                continue
            }
            report.tokens += length
            report.supervisedTokens += supervised
            report.longestExample = max(report.longestExample, length)
            kept.append(index)
            lengths.append(length)
        }
        self.source = source
        self.kept = kept
        self.lengths = lengths
        self.sequenceLength = sequenceLength
        self.microBatchSize = microBatchSize
        self.gradientAccumulation = gradientAccumulation
        self.ranks = ranks
        self.seed = seed
        self.shuffle = shuffle
        self.packing = packing
        self.window = window
        self.report = report
        if !kept.isEmpty {
            let rows = packEpoch(0)
            epochs.append(rows)
            self.report.rowsPerEpoch = rows.count
            self.report.fill = Double(report.tokens) / Double(rows.count * sequenceLength)
            self.report.paddingTokens = rows.count * sequenceLength - report.tokens
        }
    }

    /// The kept examples as trained (cut to `sequenceLength`), read from the source.
    public var examples: [SFTExample] { kept.indices.map(example) }

    public var rowsPerStep: Int { ranks * gradientAccumulation * microBatchSize }
    /// Optimizer steps in the first epoch (later epochs, packed from their own shuffle, may differ: see
    /// ``stepsPerEpoch(epochs:)``).
    public var stepsPerEpoch: Int { (report.rowsPerEpoch + rowsPerStep - 1) / rowsPerStep }
    public var maxTokensPerMicroBatch: Int { microBatchSize * sequenceLength }

    /// Bytes of the plan's own index: `kept` and the lengths (16 per kept example) and each epoch packed so
    /// far (8 per example and 40 per row: a row is an array of positions). What a rank holds of the data
    /// besides the ``ExampleSource`` itself (``DataMemory``).
    public var indexBytes: Int {
        2 * MemoryLayout<Int>.stride * kept.count
            + epochs.reduce(0) { $0 + MemoryLayout<Int>.stride * kept.count + 40 * $1.count }
    }

    /// Optimizer steps of each of the first `count` epochs, packing them now (cheap: lengths only).
    public mutating func stepsPerEpoch(epochs count: Int) -> [Int] {
        guard !kept.isEmpty else { return [Int](repeating: 0, count: count) }
        while epochs.count < count { epochs.append(packEpoch(epochs.count)) }
        return epochs.prefix(count).map { ($0.count + rowsPerStep - 1) / rowsPerStep }
    }

    /// Kept example `position`, cut to `sequenceLength`.
    func example(_ position: Int) -> SFTExample {
        let example = source.example(kept[position])
        guard example.count > sequenceLength else { return example }
        return SFTExample(inputIDs: Array(example.inputIDs.prefix(sequenceLength)), labels: Array(example.labels.prefix(sequenceLength)))
    }

    /// SplitMix64 (Steele, Lea, Flood 2014): the plan's only source of randomness, seeded from (seed, epoch).
    struct Random {
        var state: UInt64
        mutating func next() -> UInt64 {
            state &+= 0x9E37_79B9_7F4A_7C15
            var z = state
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return z ^ (z >> 31)
        }
        /// Fisher–Yates shuffle in place.
        mutating func shuffle(_ items: inout [some Any]) {
            for i in stride(from: items.count - 1, to: 0, by: -1) { items.swapAt(i, Int(next() % UInt64(i + 1))) }
        }
    }

    /// The order of the kept examples in an epoch: shuffled from (seed, epoch), or as given.
    func order(epoch: Int) -> [Int] {
        var order = Array(kept.indices)
        guard shuffle else { return order }
        var random = Random(state: seed &+ UInt64(epoch) &* 0xA076_1D64_78BD_642F)
        random.shuffle(&order)
        return order
    }

    /// The rows of an epoch, each a list of positions in `kept`.
    func packEpoch(_ epoch: Int) -> [[Int]] {
        let order = order(epoch: epoch)
        switch packing {
        case .none:
            return order.map { [$0] }
        case .greedy:
            var rows: [[Int]] = [], current: [Int] = [], used = 0
            for position in order {
                if used + lengths[position] > sequenceLength, !current.isEmpty {
                    rows.append(current)
                    current = []
                    used = 0
                }
                current.append(position)
                used += lengths[position]
            }
            if !current.isEmpty { rows.append(current) }
            return rows
        case .bfd:
            // Rows of a window come out longest example first; they are shuffled (from a stream of their
            // own, so the example order above is the greedy one's) to keep long rows from clustering in steps.
            var random = Random(state: (seed ^ 0x5BFD_5BFD_5BFD_5BFD) &+ UInt64(epoch) &* 0xE703_7ED1_A0B4_28DB)
            var rows: [[Int]] = []
            for start in stride(from: 0, to: order.count, by: window) {
                var windowRows = Self.bestFitDecreasing(Array(order[start..<min(order.count, start + window)]),
                                                        lengths: lengths, capacity: sequenceLength)
                if shuffle { random.shuffle(&windowRows) }
                rows += windowRows
            }
            return rows
        }
    }

    /// Best-fit decreasing bin packing (Johnson 1973; ≤ 11/9 OPT + 6/9 bins): items longest first (ties in
    /// the given order), each into the row whose free space is the smallest that holds it, else a new row.
    /// Deterministic: integer keys only; among rows with equal free space, the one that reached it last.
    static func bestFitDecreasing(_ items: [Int], lengths: [Int], capacity: Int) -> [[Int]] {
        let sorted = items.indices.sorted { lengths[items[$0]] != lengths[items[$1]] ? lengths[items[$0]] > lengths[items[$1]] : $0 < $1 }
        var rows: [[Int]] = []
        var rowsByFree = [[Int]](repeating: [], count: capacity + 1)  // free space → rows with it
        var free = FreeSpaceIndex(capacity: capacity)
        for item in sorted.map({ items[$0] }) {
            let length = min(lengths[item], capacity)
            let row: Int
            if let space = free.smallest(atLeast: length), let found = rowsByFree[space].popLast() {
                free.add(space, -1)
                row = found
                rows[row].append(item)
                rowsByFree[space - length].append(row)
                free.add(space - length, 1)
            } else {
                row = rows.count
                rows.append([item])
                rowsByFree[capacity - length].append(row)
                free.add(capacity - length, 1)
            }
        }
        return rows
    }

    /// Counts of rows by free space `0...capacity`, in a binary tree answering "the smallest free space
    /// ≥ n that some row has" in O(log capacity).
    struct FreeSpaceIndex {
        var size = 1
        var tree: [Int]

        init(capacity: Int) {
            while size < capacity + 1 { size *= 2 }
            tree = [Int](repeating: 0, count: 2 * size)
        }

        mutating func add(_ space: Int, _ delta: Int) {
            var node = space + size
            while node >= 1 {
                tree[node] += delta
                node /= 2
            }
        }

        func smallest(atLeast minimum: Int) -> Int? {
            guard minimum < size else { return nil }
            return find(node: 1, low: 0, high: size - 1, minimum: minimum)
        }

        private func find(node: Int, low: Int, high: Int, minimum: Int) -> Int? {
            if high < minimum || tree[node] == 0 { return nil }
            if low == high { return low }
            let middle = (low + high) / 2
            return find(node: 2 * node, low: low, high: middle, minimum: minimum)
                ?? find(node: 2 * node + 1, low: middle + 1, high: high, minimum: minimum)
        }
    }

    /// The micro-batches rank `rank` runs in optimizer step `step` (always `gradientAccumulation` of them).
    public mutating func microBatches(step: Int, rank: Int) -> [TokenBatch] {
        precondition(!kept.isEmpty, "TrainingPlan: no examples")
        // Find the epoch and the step within it.
        var epoch = 0, first = step
        while true {
            while epochs.count <= epoch { epochs.append(packEpoch(epochs.count)) }
            let steps = (epochs[epoch].count + rowsPerStep - 1) / rowsPerStep
            if first < steps { break }
            first -= steps
            epoch += 1
        }
        let rows = epochs[epoch]
        let stepRows = Array(rows[(first * rowsPerStep)..<min(rows.count, (first + 1) * rowsPerStep)])
        let length = { (row: [Int]) in row.reduce(0) { $0 + lengths[$1] } }
        let perRank = Self.deal(stepRows.map(length), bins: ranks, capacity: gradientAccumulation * microBatchSize)
        let mine = perRank[rank].map { stepRows[$0] }
        let perMicro = Self.deal(mine.map(length), bins: gradientAccumulation, capacity: microBatchSize)
        return perMicro.map { indices in
            TokenBatch(examples: indices.flatMap { mine[$0] }.map { position in
                let example = example(position)
                return (example.inputIDs, example.labels)
            })
        }
    }

    /// Longest-first deal of items into `bins` bins of at most `capacity` items, each to the lightest bin with room.
    static func deal(_ sizes: [Int], bins: Int, capacity: Int) -> [[Int]] {
        var result = [[Int]](repeating: [], count: bins), load = [Int](repeating: 0, count: bins)
        for item in sizes.indices.sorted(by: { sizes[$0] != sizes[$1] ? sizes[$0] > sizes[$1] : $0 < $1 }) {
            let bin = (0..<bins).filter { result[$0].count < capacity }.min { load[$0] != load[$1] ? load[$0] < load[$1] : $0 < $1 }!
            result[bin].append(item)
            load[bin] += sizes[item]
        }
        return result.map { $0.sorted() }
    }
}

extension TrainingPlan {
    /// Where optimizer step `step` (from 0) starts in the data: its epoch and its step within that
    /// epoch (each epoch's rows are re-packed from the shuffle of (seed, epoch), so the step alone
    /// fixes the micro-batches: this is the data cursor a checkpoint records and checks on resume).
    public mutating func position(step: Int) -> (epoch: Int, stepInEpoch: Int) {
        precondition(!kept.isEmpty && step >= 0, "TrainingPlan.position: no examples or negative step \(step)")
        var epoch = 0, first = step
        while true {
            while epochs.count <= epoch { epochs.append(packEpoch(epochs.count)) }
            let steps = (epochs[epoch].count + rowsPerStep - 1) / rowsPerStep
            if first < steps { return (epoch, first) }
            first -= steps
            epoch += 1
        }
    }
}
