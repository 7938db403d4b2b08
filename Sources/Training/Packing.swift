import Models

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
    /// Rows of one epoch and the fraction of their capacity that holds tokens.
    public var rowsPerEpoch = 0
    public var fill = 0.0

    public var summary: String {
        var parts = ["\(examples) examples, \(tokens) tokens (\(supervisedTokens) supervised), longest \(longestExample)"]
        if truncated > 0 { parts.append("\(truncated) truncated to the sequence length") }
        if skippedUnsupervised > 0 { parts.append("\(skippedUnsupervised) skipped: no supervised token") }
        parts.append("\(rowsPerEpoch) rows per epoch, \(String(format: "%.1f", fill * 100))% filled")
        return parts.joined(separator: "; ")
    }
}

/// Greedy packing of examples into rows of at most `sequenceLength` tokens, and the deal of each
/// optimizer step's rows to ranks and micro-batches.
///
/// Rows are planned from the whole dataset, identically on every rank (no communication needed):
/// step `s` takes `ranks × gradAccum × microBatchSize` consecutive rows of the epoch, sorted by
/// length and dealt to the least-loaded rank that has room, then likewise to that rank's micro-batches.
/// Every rank runs the same number of micro-steps; a missing row is an empty micro-batch (zero loss).
public struct TrainingPlan: Sendable {
    public let examples: [SFTExample]
    public let sequenceLength: Int
    public let microBatchSize: Int
    public let gradientAccumulation: Int
    public let ranks: Int
    public let seed: UInt64
    public let shuffle: Bool
    public private(set) var report: PackingReport
    /// Rows (lists of example indices) of each epoch planned so far.
    private var epochs: [[[Int]]] = []

    public init(examples raw: [SFTExample], sequenceLength: Int, microBatchSize: Int, gradientAccumulation: Int,
                ranks: Int, seed: UInt64, shuffle: Bool = true) {
        precondition(sequenceLength > 1 && microBatchSize > 0 && gradientAccumulation > 0 && ranks > 0, "TrainingPlan: invalid sizes")
        var report = PackingReport()
        var kept: [SFTExample] = []
        for var example in raw {
            report.examples += 1
            if example.count > sequenceLength {
                report.truncated += 1
                example = SFTExample(inputIDs: Array(example.inputIDs.prefix(sequenceLength)), labels: Array(example.labels.prefix(sequenceLength)))
            }
            if example.supervisedCount == 0 {
                report.skippedUnsupervised += 1
                continue
            }
            report.tokens += example.count
            report.supervisedTokens += example.supervisedCount
            report.longestExample = max(report.longestExample, example.count)
            kept.append(example)
        }
        self.examples = kept
        self.sequenceLength = sequenceLength
        self.microBatchSize = microBatchSize
        self.gradientAccumulation = gradientAccumulation
        self.ranks = ranks
        self.seed = seed
        self.shuffle = shuffle
        self.report = report
        if !kept.isEmpty {
            let rows = packEpoch(0)
            epochs.append(rows)
            self.report.rowsPerEpoch = rows.count
            self.report.fill = Double(report.tokens) / Double(rows.count * sequenceLength)
        }
    }

    public var rowsPerStep: Int { ranks * gradientAccumulation * microBatchSize }
    /// Optimizer steps in the first epoch.
    public var stepsPerEpoch: Int { (report.rowsPerEpoch + rowsPerStep - 1) / rowsPerStep }
    public var maxTokensPerMicroBatch: Int { microBatchSize * sequenceLength }

    /// The example order of an epoch: shuffled from (seed, epoch), or as given.
    func order(epoch: Int) -> [Int] {
        var order = Array(examples.indices)
        guard shuffle else { return order }
        var state = seed &+ UInt64(epoch) &* 0xA076_1D64_78BD_642F
        for i in stride(from: order.count - 1, to: 0, by: -1) {
            state &+= 0x9E37_79B9_7F4A_7C15
            var z = state
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            z ^= z >> 31
            order.swapAt(i, Int(z % UInt64(i + 1)))
        }
        return order
    }

    /// Greedy packing in epoch order: an example joins the current row if it fits, else starts a new one.
    func packEpoch(_ epoch: Int) -> [[Int]] {
        var rows: [[Int]] = [], current: [Int] = [], used = 0
        for index in order(epoch: epoch) {
            let length = examples[index].count
            if used + length > sequenceLength, !current.isEmpty {
                rows.append(current)
                current = []
                used = 0
            }
            current.append(index)
            used += length
        }
        if !current.isEmpty { rows.append(current) }
        return rows
    }

    /// The micro-batches rank `rank` runs in optimizer step `step` (always `gradientAccumulation` of them).
    public mutating func microBatches(step: Int, rank: Int) -> [TokenBatch] {
        precondition(!examples.isEmpty, "TrainingPlan: no examples")
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
        let length = { (row: [Int]) in row.reduce(0) { $0 + examples[$1].count } }
        let perRank = Self.deal(stepRows.map(length), bins: ranks, capacity: gradientAccumulation * microBatchSize)
        let mine = perRank[rank].map { stepRows[$0] }
        let perMicro = Self.deal(mine.map(length), bins: gradientAccumulation, capacity: microBatchSize)
        return perMicro.map { indices in
            TokenBatch(examples: indices.flatMap { mine[$0] }.map { (examples[$0].inputIDs, examples[$0].labels) })
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
        precondition(!examples.isEmpty && step >= 0, "TrainingPlan.position: no examples or negative step \(step)")
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
