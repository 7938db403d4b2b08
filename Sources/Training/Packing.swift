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
    /// The examples trained on: those with a supervised token, cut to the sequence length.
    public let examples: PlannedExamples
    public let sequenceLength: Int
    public let microBatchSize: Int
    public let gradientAccumulation: Int
    public let ranks: Int
    public let seed: UInt64
    public let shuffle: Bool
    public private(set) var report: PackingReport
    /// Rows (lists of example indices) of each epoch planned so far.
    private var epochs: [[[Int]]] = []

    /// Plans from lengths and supervised counts only; tokens are read (from memory or a mapped prepared
    /// file) when ``microBatches(step:rank:)`` builds a batch, and only a truncated example's tokens are
    /// read here (its supervised count within the sequence length).
    public init(examples raw: any ExampleSource, sequenceLength: Int, microBatchSize: Int, gradientAccumulation: Int,
                ranks: Int, seed: UInt64, shuffle: Bool = true) {
        precondition(sequenceLength > 1 && microBatchSize > 0 && gradientAccumulation > 0 && ranks > 0, "TrainingPlan: invalid sizes")
        let planned = PlannedExamples(raw, sequenceLength: sequenceLength)
        self.examples = planned
        self.report = planned.report
        self.sequenceLength = sequenceLength
        self.microBatchSize = microBatchSize
        self.gradientAccumulation = gradientAccumulation
        self.ranks = ranks
        self.seed = seed
        self.shuffle = shuffle
        if !planned.isEmpty {
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
        var order = Array(0..<examples.count)
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
            let length = examples.length(index)
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
        let length = { (row: [Int]) in row.reduce(0) { $0 + examples.length($1) } }
        let perRank = Self.deal(stepRows.map(length), bins: ranks, capacity: gradientAccumulation * microBatchSize)
        let mine = perRank[rank].map { stepRows[$0] }
        let perMicro = Self.deal(mine.map(length), bins: gradientAccumulation, capacity: microBatchSize)
        return perMicro.map { indices in
            TokenBatch(examples: indices.flatMap { mine[$0] }.map { let example = examples.example($0); return (example.inputIDs, example.labels) })
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

/// The examples a plan trains on, as indices into its source: those with a supervised token within the
/// sequence length, each cut to it. Memory: three `Int`s per example (24 bytes), whatever their length.
public struct PlannedExamples: ExampleSource {
    public let source: any ExampleSource
    public let sequenceLength: Int
    /// Index in `source` of each kept example, its length and supervised count after truncation.
    let indices: [Int]
    let lengths: [Int]
    let supervised: [Int]
    /// The counts ``TrainingPlan`` reports (rows and fill are the plan's).
    let report: PackingReport

    init(_ source: any ExampleSource, sequenceLength: Int) {
        self.source = source
        self.sequenceLength = sequenceLength
        var report = PackingReport()
        var indices: [Int] = [], lengths: [Int] = [], supervised: [Int] = []
        for index in 0..<source.count {
            report.examples += 1
            var length = source.length(index), count = source.supervisedCount(index)
            if length > sequenceLength {
                report.truncated += 1
                length = sequenceLength
                let labels = source.example(index).labels.prefix(sequenceLength)
                count = labels.dropFirst().reduce(0) { $0 + ($1 == -100 ? 0 : 1) }
            }
            if count == 0 {
                report.skippedUnsupervised += 1
                continue
            }
            report.tokens += length
            report.supervisedTokens += count
            report.longestExample = max(report.longestExample, length)
            indices.append(index)
            lengths.append(length)
            supervised.append(count)
        }
        self.indices = indices
        self.lengths = lengths
        self.supervised = supervised
        self.report = report
    }

    public var count: Int { indices.count }
    public var isEmpty: Bool { indices.isEmpty }
    public func length(_ index: Int) -> Int { lengths[index] }
    public func supervisedCount(_ index: Int) -> Int { supervised[index] }
    public func example(_ index: Int) -> SFTExample {
        let example = source.example(indices[index])
        guard example.count > sequenceLength else { return example }
        return SFTExample(inputIDs: Array(example.inputIDs.prefix(sequenceLength)), labels: Array(example.labels.prefix(sequenceLength)))
    }

    /// Bytes of this rank's memory the plan's per-example arrays take.
    public var indexBytes: Int { 3 * MemoryLayout<Int>.stride * indices.count }
}
