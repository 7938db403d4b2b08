import Foundation
import Glibc
import Collectives
import Sharding

/// What one rank holds, in bytes, by category, and what the operating system measured.
public struct MemoryLedger: Sendable, Codable, Equatable {
    public var rank = 0
    /// Persistent parameters (stage 3: the shard only).
    public var parameters = 0
    /// Peak of units gathered for use at once (stage 3).
    public var gatheredParameters = 0
    /// Persistent gradients (stages 2–3: the shard only).
    public var gradients = 0
    /// Peak of full-size gradient buffers in flight (stages 2–3).
    public var gradientBuffers = 0
    /// AdamW `m` and `v`.
    public var optimizerMoments = 0
    /// Cached activations and scratch for one micro-batch.
    public var activations = 0
    /// Peak of receive buffers of collectives.
    public var communication = 0
    /// The training data in this rank's own memory: in-memory examples (JSONL), or only the plan's
    /// per-example index when the data is a memory-mapped prepared file (``DataMemory``).
    public var data = 0
    /// Bytes of a mapped prepared file: page cache, one copy per host whatever the rank count (not in ``accounted``).
    public var mappedData = 0
    /// Peak resident set size (`getrusage`), and the current one (`/proc/self/statm`).
    public var peakRSS = 0
    public var currentRSS = 0

    enum CodingKeys: String, CodingKey {
        case rank, parameters, gradients, activations, communication, data
        case mappedData = "mapped_data"
        case gatheredParameters = "gathered_parameters"
        case gradientBuffers = "gradient_buffers"
        case optimizerMoments = "optimizer_moments"
        case peakRSS = "peak_rss"
        case currentRSS = "current_rss"
    }

    public init() {}

    public init(engine: ZeroEngine, activationBytes: Int, data: DataMemory = DataMemory()) {
        rank = engine.communicator.rank
        parameters = engine.parameterBytes
        gatheredParameters = engine.peakGatheredBytes
        gradients = engine.gradientBytes
        gradientBuffers = engine.peakGradientBufferBytes
        optimizerMoments = engine.momentBytes
        activations = activationBytes
        communication = engine.peakCommunicationBytes
        self.data = data.privateBytes
        mappedData = data.mappedBytes
        peakRSS = Self.peakResidentBytes()
        currentRSS = Self.currentResidentBytes()
    }

    /// Parameters, gradients and moments: the model states ZeRO distributes.
    public var modelStates: Int { parameters + gradients + optimizerMoments }
    /// Everything the ledger accounts for.
    public var accounted: Int { modelStates + gatheredParameters + gradientBuffers + activations + communication + data }

    var fields: [Int] { [rank, parameters, gatheredParameters, gradients, gradientBuffers, optimizerMoments, activations, communication, peakRSS, currentRSS,
                         data, mappedData] }
    init(fields f: [Int]) {
        (rank, parameters, gatheredParameters, gradients, gradientBuffers) = (f[0], f[1], f[2], f[3], f[4])
        (optimizerMoments, activations, communication, peakRSS, currentRSS) = (f[5], f[6], f[7], f[8], f[9])
        (data, mappedData) = (f[10], f[11])
    }

    /// Every rank's ledger, on every rank (a collective).
    public static func gather(_ local: MemoryLedger, communicator: Communicator) throws -> [MemoryLedger] {
        let all = try communicator.allGather(local.fields.map(Int64.init))
        let width = local.fields.count
        return stride(from: 0, to: all.count, by: width).map { MemoryLedger(fields: all[$0..<($0 + width)].map(Int.init)) }
    }

    public static func peakResidentBytes() -> Int {
        var usage = rusage()
        getrusage(RUSAGE_SELF.rawValue, &usage)
        return usage.ru_maxrss * 1024
    }

    public static func currentResidentBytes() -> Int {
        guard let text = try? String(contentsOfFile: "/proc/self/statm", encoding: .utf8) else { return 0 }
        let fields = text.split(separator: " ")
        guard fields.count > 1, let pages = Int(fields[1]) else { return 0 }
        return pages * Int(sysconf(Int32(_SC_PAGESIZE)))
    }

    /// `params 12.3M grads 4.1M moments 8.2M act 30.0M peak RSS 210M`.
    public var brief: String {
        "params \(Self.format(parameters + gatheredParameters)) grads \(Self.format(gradients + gradientBuffers)) "
            + "moments \(Self.format(optimizerMoments)) act \(Self.format(activations)) data \(Self.format(data))"
            + (mappedData > 0 ? " (+\(Self.format(mappedData)) mapped, shared)" : "") + " rss \(Self.format(peakRSS))"
    }

    public static func format(_ bytes: Int) -> String {
        let value = Double(bytes)
        if value >= 1_073_741_824 { return String(format: "%.2fG", value / 1_073_741_824) }
        if value >= 1_048_576 { return String(format: "%.1fM", value / 1_048_576) }
        if value >= 1024 { return String(format: "%.1fK", value / 1024) }
        return "\(bytes)B"
    }
}


/// The memory a rank's training data takes: its own (``privateBytes``) and a mapped prepared file's
/// (``mappedBytes``, page cache shared by every rank on the host).
///
/// In memory (`[SFTExample]`): 8 bytes per token (`input_ids` and `labels` as `Int32`) plus two array
/// headers (32 bytes each) and the example itself (16 bytes), per example. A prepared file: nothing but
/// the mapping. Either way the plan adds its index (``TrainingPlan/indexBytes``): 16 bytes per kept example
/// (index and length) and, per packed epoch, 8 per example and 40 per row (about 24 bytes per example).
public struct DataMemory: Sendable, Equatable {
    public var privateBytes = 0
    public var mappedBytes = 0

    public init() {}

    /// The memory of `plan`'s examples and index.
    public init(plan: TrainingPlan) {
        self = Self.of(plan.source)
        privateBytes += plan.indexBytes
    }

    /// The planned memory of a corpus of `examples` examples and `tokens` tokens: in memory 8 bytes per token
    /// and 80 per example, or (`prepared`) only the mapping of `fileBytes`; plus the plan's 24 bytes per example.
    public static func planned(examples: Int, tokens: Int, prepared: Bool, fileBytes: Int = 0) -> DataMemory {
        var memory = DataMemory()
        memory.privateBytes = 3 * MemoryLayout<Int>.stride * examples + (prepared ? 0 : 8 * tokens + 80 * examples)
        memory.mappedBytes = prepared ? fileBytes : 0
        return memory
    }

    /// The memory of a source on its own.
    public static func of(_ source: any ExampleSource) -> DataMemory {
        var memory = DataMemory()
        if let prepared = source as? PreparedFile {
            memory.mappedBytes = prepared.mappedBytes
        } else if let examples = source as? [SFTExample] {
            memory.privateBytes = examples.reduce(0) { $0 + 8 * $1.count + 80 }
        }
        return memory
    }
}
