import Kernels
import Models
import Sharding

/// What one rank of a training run will hold, in bytes, predicted from the configuration alone.
///
/// The first seven fields are the ``MemoryLedger``'s categories, counted the way the ledger counts
/// them (persistent buffers, and the peaks of the transient ones). The others are what the ledger
/// does not see but the operating system does: the classifier's chunk buffers, attention scratch,
/// Open MPI's temporary buffers inside collectives, OpenBLAS's packing buffer and the runtime
/// baseline. ``predictedPeakRSS`` is the baseline plus the largest sum of buffers alive *at the same
/// time* during a step (not the sum of the category peaks, which never coincide).
public struct MemoryPlan: Sendable, Codable, Equatable {
    public var rank = 0
    public var ranks = 1
    public var stage = ZeroStage.zero
    public var sequenceLength = 0
    public var microBatchSize = 0
    /// The dtype parameters are read and gathered in (`--param-dtype`) this plan is for.
    public var parameterDType = ParameterDType.fp32

    // The ledger's categories.
    public var parameters = 0
    public var gatheredParameters = 0
    public var gradients = 0
    public var gradientBuffers = 0
    public var optimizerMoments = 0
    public var activations = 0
    public var communication = 0
    /// The training data in the rank's own memory (``DataMemory``; 0 when no data was given to the planner).
    public var data = 0
    /// A mapped prepared file's bytes: page cache, one copy per host (not in ``predictedPeakRSS``).
    public var mappedData = 0

    // What only the operating system sees.
    /// `Classifier.forwardBackward`'s chunk buffers: `rows × V` logits (rows ``Classifier/logitsStride(vocabulary:)``
    /// apart) and two `rows × C`, held by the
    /// model from its first micro-batch on (``Classifier/Workspace``).
    public var classifierBuffers = 0
    /// Peak of attention's per-call scratch (the backward's, per worker thread:
    /// ``Attention/scratchFloats(shape:longest:threads:)``).
    public var attentionScratch = 0
    /// Peak of Open MPI's internal temporary buffers on this rank (see ``MemoryPlanner``).
    public var collectiveTemporaries = 0
    /// OpenBLAS's packing buffer, touched by the largest `gemm` and kept for the process's life.
    public var blasBuffer = 0
    /// `--precision bf16`: the operands each gemm-running thread keeps rounded to bf16
    /// (``BLAS/bf16ScratchBytes``): the rank's thread holds the classifier's largest, `rows × V` and
    /// `V × C`; each further attention worker a block's (``MemoryPlanner/bf16OperandBytes(config:rows:tokens:sequenceLength:threads:)``).
    public var bf16Operands = 0
    /// Swift runtime, Foundation, OpenBLAS and (with more than one rank) Open MPI, measured.
    public var runtimeBaseline = 0

    /// The largest sum of buffers alive at once, and the phase of the step where it happens.
    public var peakLive = 0
    public var peakPhase = ""
    /// `runtimeBaseline + peakLive`: what `getrusage` should report.
    public var predictedPeakRSS = 0

    /// Parameters, gradients and moments: the model states ZeRO distributes.
    public var modelStates: Int { parameters + gradients + optimizerMoments }

    enum CodingKeys: String, CodingKey {
        case rank, ranks, stage, parameters, gradients, activations, communication, data
        case mappedData = "mapped_data"
        case sequenceLength = "seq_len"
        case microBatchSize = "micro_batch_size"
        case parameterDType = "param_dtype"
        case gatheredParameters = "gathered_parameters"
        case gradientBuffers = "gradient_buffers"
        case optimizerMoments = "optimizer_moments"
        case classifierBuffers = "classifier_buffers"
        case attentionScratch = "attention_scratch"
        case collectiveTemporaries = "collective_temporaries"
        case blasBuffer = "blas_buffer"
        case bf16Operands = "bf16_operands"
        case runtimeBaseline = "runtime_baseline"
        case peakLive = "peak_live"
        case peakPhase = "peak_phase"
        case predictedPeakRSS = "predicted_peak_rss"
    }
}

/// Predicts per-rank memory by replaying one training step's allocations, without allocating.
///
/// The replay follows the code: ``ZeroEngine``'s three flat buffers per rank — parameters, gradients,
/// and AdamW's `m` and `v` — whose offsets tables (``FlatLayout``) hold each unit padded to a multiple
/// of N by ``ShardPlan`` (whole, or one shard), its schedule-driven gathers with one-unit prefetch (stage 3; at a tied head the
/// final unit, the embedding and the prefetched last layer are gathered at once), its full-size
/// gradient buffers and reduce-scatter scratch shards (stages 2–3; the tied embedding's gradient is
/// requested twice, at the head and at the end of the backward), stage 1's reduce-scatter scratch,
/// ``DecoderModel``'s activations and ``Classifier``'s chunk buffers (held: the model keeps them from
/// one micro-batch to the next).
///
/// Gradient reduce-scatters go round a ring (``RingReduceScatter``): they reduce in the gradient
/// buffer itself and receive into one shard, so they add nothing the ledger does not count. The
/// only Open MPI temporary left is stage 0's `MPI_Allreduce` (from `ompi/mca/coll` of the 4.1.4
/// sources): coll/tuned picks Rabenseifner's reduce-scatter + all-gather for units of 256 KiB and
/// more, which touches half of a unit-sized scratch; smaller units on fewer than 4 ranks go round a
/// segmented ring with two 1/N-sized buffers. `MPI_Iallgather` (libnbc, linear) and the in-place
/// `MPI_Allgather` (two-process or recursive doubling) need none. Every rank therefore holds the
/// same bytes.
///
/// How many stage-2/3 reduce-scatters are in flight depends on how far the ranks drift apart, but
/// never exceeds the engine's cap (``reductionsInFlight``, `train --reductions-in-flight`): the
/// replay assumes the worst, that each stays in flight until the cap forces it to complete, so the
/// prediction is an upper bound by at most the cap's worth of layer buffers. With one rank there is
/// nothing to reduce: a released gradient is added to the store at once.
public struct MemoryPlanner: Sendable {
    public var config: ModelConfig
    public var stage: ZeroStage
    public var ranks: Int
    public var sequenceLength: Int
    public var microBatchSize: Int
    /// The engine's cap on reduce-scatters in flight (stages 2–3, N > 1).
    public var reductionsInFlight = ZeroEngine.defaultReductionsInFlight
    /// Supervised positions per micro-batch (sets the classifier's rows); default: every position
    /// that has a next token, `microBatchSize × (sequenceLength − 1)`.
    public var supervisedRows: Int? = nil
    /// The data's memory per rank (``DataMemory/planned(examples:tokens:prepared:fileBytes:)``).
    public var data = DataMemory()
    /// Threads each rank runs its kernels on (``Parallel/threadCount``: `OPENBLAS_NUM_THREADS`); the
    /// attention kernels keep scratch per thread.
    public var threads = Parallel.threadCount
    /// The gemms' precision (``BLAS/precision``, `--precision`): bf16 adds ``MemoryPlan/bf16Operands``.
    public var precision = BLAS.precision
    /// The gemm library (``BLAS/library``, `--blas`): oneDNN adds ``oneDNNBaseline``.
    public var library = BLAS.library
    /// `--param-dtype`: under bf16 stage 3 gathers into half-size buffers of bf16 patterns, widened to
    /// fp32 when the unit is used (both held for the moment of the copy), and stages 0–2 hold a rounded
    /// fp32 copy of each unit in use (``ShardedParameters``).
    public var parameterDType = ParameterDType.fp32

    /// Runtime baselines measured with `--model tiny` (2.8 MB of buffers): peak RSS minus the ledger's bytes.
    public static let baselineWithoutMPI = 26 << 20
    public static let baselineWithMPI = 36 << 20
    /// What loading oneDNN adds to the baseline (`--blas onednn`, `auto` where it picks oneDNN, or
    /// `--precision bf16`): measured with `--model tiny`, 3 steps, against `--blas openblas`: +9.4 MB
    /// (oneDNN, 1 rank), +7.5 MB (2 ranks), +5.6 MB (bf16, 1 rank).
    public static let oneDNNBaseline = 10 << 20
    /// OpenBLAS 0.3.21 (Zen/Haswell sgemm kernels) packs B in panels of at most `blasPanelDepth ×
    /// blasPanelWidth` floats (measured: 256 × 104,960, 102.5 MiB) and keeps the buffer.
    public static let blasPanelDepth = 256
    public static let blasPanelWidth = 104_960

    public init(config: ModelConfig, stage: ZeroStage, ranks: Int, sequenceLength: Int, microBatchSize: Int) {
        precondition(ranks >= 1 && sequenceLength >= 2 && microBatchSize >= 1, "MemoryPlanner: invalid sizes")
        self.config = config
        self.stage = stage
        self.ranks = ranks
        self.sequenceLength = sequenceLength
        self.microBatchSize = microBatchSize
    }

    /// Tokens one micro-batch holds (activations are allocated for this many).
    public var tokens: Int { microBatchSize * sequenceLength }

    /// `DecoderModel`'s activation bytes for `tokens` tokens (the layout of `Activations`):
    /// per layer and token `2C + 2 + 2·Hq·d + 2·Hkv·d + Hq + G` floats cached, `G` the gate/up cache's
    /// row stride (``SwiGLU/rowStride(width:)``: `2F`, or `2F + 32` where `2F` is a multiple of 256), plus `C` for the
    /// final hidden state, `1` for its rstd, and one layer's scratch `3C + F + 2·Hq·d + 2·Hkv·d`, plus
    /// `Hq·d + 2·Hkv·d` when q/k/v are one gemm (no q/k/v biases: ``LayerTensors/qkv``).
    public static func activationBytes(config: ModelConfig, tokens n: Int) -> Int {
        let c = config.hiddenSize, f = config.intermediateSize, layers = config.numHiddenLayers
        let qw = config.numAttentionHeads * config.headDimension, kw = config.numKeyValueHeads * config.headDimension
        let perLayer = n * (2 * c + 2 + 2 * qw + 2 * kw + config.numAttentionHeads + SwiGLU.rowStride(width: f))
        let fusedQKV = ParameterLayout(config: config).layer.qkv != nil
        let scratch = n * (1 + 3 * c + f + 2 * qw + 2 * kw + (fusedQKV ? qw + 2 * kw : 0))
        return 4 * (layers * perLayer + n * c + scratch)
    }

    /// The plan of every rank, rank 0 first (all the same: no rank roots a reduction).
    public func planAllRanks() -> [MemoryPlan] {
        let plan = self.plan(rank: 0)
        return (0..<ranks).map { rank in
            var copy = plan
            copy.rank = rank
            return copy
        }
    }

    /// The bytes of all ranks of one host (every rank of the job on one machine).
    public func hostBytes() -> Int { planAllRanks().reduce(0) { $0 + $1.predictedPeakRSS } }

    /// Bytes of bf16 operand scratch under `--precision bf16` (``BLAS/bf16ScratchBytes``), 2 per element:
    /// the rank's thread keeps the largest `A` and `B` it rounds — the classifier's `dlogits (rows, V)`
    /// and `W (V, C)`, or a layer's `(tokens, 2F)` and `(2F, C)` if larger — and each of the other
    /// `threads − 1` attention workers a block's stacked rows against one segment's keys
    /// (`(blockRows · group, longest)` and `(longest, d)`).
    public static func bf16OperandBytes(config: ModelConfig, rows: Int, tokens: Int, sequenceLength: Int, threads: Int) -> Int {
        let c = config.hiddenSize, v = config.vocabSize, f = config.intermediateSize
        let qkv = (config.numAttentionHeads + 2 * config.numKeyValueHeads) * config.headDimension
        let layerA = tokens * max(2 * f, qkv, c), layerB = max(2 * f * c, qkv * c, tokens * max(f, c))
        let main = max(rows * v, layerA) + max(v * c, layerB)
        let group = config.numAttentionHeads / max(1, config.numKeyValueHeads)
        let stacked = min(Attention.blockRows, sequenceLength) * group
        let worker = stacked * sequenceLength + max(sequenceLength, stacked) * config.headDimension
        return 2 * (main + max(0, threads - 1) * worker)
    }

    /// Replays one optimizer step (one micro-batch) on `rank`.
    public func plan(rank: Int = 0) -> MemoryPlan {
        let layout = ParameterLayout(config: config)
        let shards = ShardPlan(layout: layout, ranks: ranks)
        let full = shards.units.map { 4 * $0.paddedCount }, shard = shards.units.map { 4 * $0.shardCount }
        var plan = MemoryPlan()
        plan.rank = rank
        plan.ranks = ranks
        plan.stage = stage
        plan.sequenceLength = sequenceLength
        plan.microBatchSize = microBatchSize
        plan.parameterDType = parameterDType
        plan.parameters = (stage.shardsParameters ? shard : full).reduce(0, +)
        plan.gradients = (stage.shardsGradients ? shard : full).reduce(0, +)
        plan.optimizerMoments = 2 * (stage.shardsMoments ? shard : full).reduce(0, +)
        plan.activations = Self.activationBytes(config: config, tokens: tokens)
        plan.runtimeBaseline = (ranks > 1 ? Self.baselineWithMPI : Self.baselineWithoutMPI)
            + (library == .onednn || precision == .bf16 ? Self.oneDNNBaseline : 0)
        plan.data = data.privateBytes
        plan.mappedData = data.mappedBytes

        let c = config.hiddenSize, v = config.vocabSize
        let rows = min(Classifier.chunkRows, max(1, supervisedRows ?? microBatchSize * (sequenceLength - 1)))
        plan.classifierBuffers = 4 * (rows * Classifier.logitsStride(vocabulary: v) + 2 * rows * c)
        let attentionShape = Attention.Shape(queryHeads: config.numAttentionHeads, keyValueHeads: config.numKeyValueHeads,
                                             headDimension: config.headDimension)
        plan.attentionScratch = 4 * Attention.scratchFloats(shape: attentionShape, longest: sequenceLength, threads: threads)
        // The largest packed panel: the classifier's dW = dlogitsᵀ·h (m = V, k = rows) or a layer's
        // dW = doutᵀ·x (m = F, k = tokens).
        let panel = { (m: Int, k: Int) in 4 * min(k, Self.blasPanelDepth) * min(m, Self.blasPanelWidth) }
        plan.blasBuffer = max(panel(v, rows), panel(config.intermediateSize, tokens))
        if precision == .bf16 {
            plan.bf16Operands = Self.bf16OperandBytes(config: config, rows: rows, tokens: tokens, sequenceLength: sequenceLength, threads: threads)
        }

        var replay = Replay(stage: stage, ranks: ranks, full: full, shard: shard, inFlight: max(1, reductionsInFlight))
        if parameterDType == .bf16 { replay.wire = shards.units.map { 4 * (($0.paddedCount + 1) / 2) } }
        replay.spareParameters = Replay.Spares(sizes: Replay.Spares.recurring(full).union(Replay.Spares.recurring(replay.wire ?? [])))
        replay.spareGradients = Replay.Spares(sizes: Replay.Spares.recurring(full))
        replay.spareScratch = Replay.Spares(sizes: Replay.Spares.recurring(shard))
        replay.persistent = plan.modelStates + plan.activations + plan.classifierBuffers + plan.blasBuffer + plan.bf16Operands + plan.data
        replay.trainingStep(layout: layout, config: config, attention: plan.attentionScratch)
        replay.optimizerPhase()
        plan.gatheredParameters = replay.peaks.gathered
        plan.gradientBuffers = replay.peaks.gradientBuffers
        plan.communication = replay.peaks.communication
        plan.collectiveTemporaries = replay.peaks.temporaries
        plan.peakLive = replay.peakLive
        plan.peakPhase = replay.peakPhase
        plan.predictedPeakRSS = plan.runtimeBaseline + plan.peakLive
        return plan
    }
}

/// A replay of ``ZeroEngine`` and ``DecoderModel/step`` that only counts bytes.
struct Replay {
    struct Live { var gathered = 0, gradientBuffers = 0, communication = 0, temporaries = 0, transient = 0 }
    let stage: ZeroStage
    let ranks: Int
    let full: [Int], shard: [Int]
    /// The engine's cap on reduce-scatters in flight.
    let inFlight: Int
    var persistent = 0
    var live = Live(), peaks = Live()
    var peakLive = 0, peakPhase = ""

    var gathered: Set<Int> = []
    /// `--param-dtype bf16`: each unit's buffer of bf16 patterns (stage 3), and the gathers started
    /// into them and not yet widened; nil under fp32.
    var wire: [Int]? = nil
    var wiring: Set<Int> = []
    /// ``SpareBuffers``, byte for byte: at most one released buffer kept per recurring size (two or
    /// more units of it: the layers'), still counted in its category; asking for a size not kept
    /// frees every spare first, and so does the end of the pass.
    struct Spares {
        var sizes: Set<Int> = []
        var held: Set<Int> = []
        /// The sizes that occur two or more times in `bytes`.
        static func recurring(_ bytes: [Int]) -> Set<Int> {
            Set(Dictionary(bytes.map { ($0, 1) }, uniquingKeysWith: +).filter { $0.value >= 2 }.keys)
        }
        /// Whether a spare of `bytes` was there to reuse (taken); else the bytes of the spares freed first.
        mutating func take(_ bytes: Int) -> (reused: Bool, freed: Int) {
            if held.remove(bytes) != nil { return (true, 0) }
            return (false, sizes.contains(bytes) ? 0 : removeAll())
        }
        /// Frees every spare; their bytes.
        mutating func removeAll() -> Int {
            defer { held.removeAll() }
            return held.reduce(0, +)
        }
        /// Whether a released buffer of `bytes` is kept.
        mutating func keep(_ bytes: Int) -> Bool {
            guard sizes.contains(bytes), !held.contains(bytes) else { return false }
            held.insert(bytes)
            return true
        }
    }
    var spareParameters = Spares(), spareGradients = Spares(), spareScratch = Spares()
    var gradientBuffers: Set<Int> = []
    var reductions: [Int] = []
    var schedule: [Int] = [], cursor = 0

    init(stage: ZeroStage, ranks: Int, full: [Int], shard: [Int], inFlight: Int) {
        self.stage = stage
        self.ranks = ranks
        self.full = full
        self.shard = shard
        self.inFlight = inFlight
    }

    mutating func record(_ phase: @autoclosure () -> String) {
        peaks.gathered = max(peaks.gathered, live.gathered)
        peaks.gradientBuffers = max(peaks.gradientBuffers, live.gradientBuffers)
        peaks.communication = max(peaks.communication, live.communication)
        peaks.temporaries = max(peaks.temporaries, live.temporaries)
        let total = persistent + live.gathered + live.gradientBuffers + live.communication + live.temporaries + live.transient
        if total > peakLive { peakLive = total; peakPhase = phase() }
    }

    // MARK: ZeroEngine, byte for byte

    mutating func parameters(_ unit: Int, _ phase: String) {
        precondition(schedule[cursor] == unit, "Replay: unit \(unit) out of schedule")
        cursor += 1
        guard stage.shardsParameters else {
            // bf16: a rounded copy of the whole unit while it is used.
            if wire != nil { hold(unit, phase) }
            return
        }
        if !gathered.contains(unit), !wiring.contains(unit) { gather(unit, phase) }
        if let wire, wiring.remove(unit) != nil {
            hold(unit, phase)
            free(wire[unit])
        }
        if cursor < schedule.count, !gathered.contains(schedule[cursor]), !wiring.contains(schedule[cursor]) {
            gather(schedule[cursor], phase)
        }
    }

    /// Starts a stage-3 gather: into the fp32 unit, or (bf16) into its buffer of patterns.
    mutating func gather(_ unit: Int, _ phase: String) {
        guard let wire else { return hold(unit, phase) }
        wiring.insert(unit)
        allocate(wire[unit], from: \.spareParameters, in: \.gathered, phase)
    }

    /// A transient buffer of `bytes` in `category`: the spare of that size, or new (recorded), after
    /// the spares a unique size frees (``SpareBuffers/take(count:prefault:)``).
    mutating func allocate(_ bytes: Int, from spares: WritableKeyPath<Replay, Spares>, in category: WritableKeyPath<Live, Int>,
                           _ phase: String) {
        let spare = self[keyPath: spares].take(bytes)
        live[keyPath: category] -= spare.freed
        guard !spare.reused else { return }
        live[keyPath: category] += bytes
        record(phase)
    }

    /// The fp32 unit the model reads: gathered, widened or (stages 0–2, bf16) rounded.
    mutating func hold(_ unit: Int, _ phase: String) {
        gathered.insert(unit)
        allocate(full[unit], from: \.spareParameters, in: \.gathered, phase)
    }

    mutating func releaseParameters(_ unit: Int) {
        guard gathered.remove(unit) != nil else { return }
        free(full[unit])
    }

    /// A parameter buffer of `bytes` given back: kept as a spare when a unit still to come in the pass
    /// will need a new buffer of that size (``ShardedParameters``), else freed.
    mutating func free(_ bytes: Int) {
        let wanted = schedule[cursor...].contains { unit in
            !gathered.contains(unit) && (full[unit] == bytes || (!wiring.contains(unit) && wire?[unit] == bytes))
        }
        if !wanted || !spareParameters.keep(bytes) { live.gathered -= bytes }
    }

    mutating func gradients(_ unit: Int, _ phase: String) {
        guard stage.shardsGradients, !gradientBuffers.contains(unit) else { return }
        gradientBuffers.insert(unit)
        allocate(full[unit], from: \.spareGradients, in: \.gradientBuffers, phase)
    }

    /// One rank: the gradient is added to the store at once. More: the oldest reduce-scatters
    /// complete until fewer than the cap remain, then this one starts with its scratch shard.
    mutating func releaseGradients(_ unit: Int, _ phase: String) {
        guard stage.shardsGradients, gradientBuffers.remove(unit) != nil else { return }
        guard ranks > 1 else {
            if !spareGradients.keep(full[unit]) { live.gradientBuffers -= full[unit] }
            return
        }
        while reductions.count >= inFlight { complete(reductions.removeFirst()) }
        reductions.append(unit)
        allocate(shard[unit], from: \.spareScratch, in: \.communication, phase)
    }

    mutating func complete(_ unit: Int) {
        if !spareGradients.keep(full[unit]) { live.gradientBuffers -= full[unit] }
        if !spareScratch.keep(shard[unit]) { live.communication -= shard[unit] }
    }

    // MARK: DecoderModel.step(training: true)

    mutating func trainingStep(layout: ParameterLayout, config: ModelConfig, attention: Int) {
        let embedding = layout.embeddingUnit, final = layout.finalUnit
        let layers = (0..<config.numHiddenLayers).map(layout.layerUnit)
        schedule = [embedding] + layers + [final] + (config.tieWordEmbeddings ? [embedding] : []) + layers.reversed()
        cursor = 0
        parameters(embedding, "forward")
        releaseParameters(embedding)
        for unit in layers {
            parameters(unit, "forward")
            briefly(attention, "forward attention")
            releaseParameters(unit)
        }
        // The model's nested scopes: final parameters, final gradient, then (tied) the embedding's.
        parameters(final, "head")
        gradients(final, "head")
        if config.tieWordEmbeddings {
            parameters(embedding, "head")
            gradients(embedding, "head")
        }
        if config.tieWordEmbeddings {
            releaseGradients(embedding, "head gradient reduce-scatter")
            releaseParameters(embedding)
        }
        releaseGradients(final, "head gradient reduce-scatter")
        releaseParameters(final)
        for unit in layers.reversed() {
            parameters(unit, "backward")
            gradients(unit, "backward")
            briefly(attention, "backward attention")
            releaseGradients(unit, "backward reduce-scatter")
            releaseParameters(unit)
        }
        gradients(embedding, "embedding backward")
        releaseGradients(embedding, "embedding gradient reduce-scatter")
        // ZeroEngine.endPass: the parameters' spares go, the rings complete, the gradients' spares go.
        live.gathered -= spareParameters.removeAll()
        while !reductions.isEmpty { complete(reductions.removeFirst()) }
        live.gradientBuffers -= spareGradients.removeAll()
        live.communication -= spareScratch.removeAll()
    }

    /// Records a moment at which `bytes` more of `category` are alive than outside it.
    mutating func briefly(_ bytes: Int, in category: WritableKeyPath<Live, Int> = \.transient, _ phase: String) {
        live[keyPath: category] += bytes
        record(phase)
        live[keyPath: category] -= bytes
    }

    // MARK: reduceGradients and optimizerStep

    mutating func optimizerPhase() {
        guard ranks > 1 else { return }
        switch stage {
        case .zero:
            // Rabenseifner (N ≥ 4, or units of 256 KiB and more): the first received half of a
            // unit-sized scratch; smaller units with N < 4 go round a ring in two 1/N-sized segments.
            for bytes in full {
                briefly(ranks < 4 && bytes < 262_144 ? 2 * bytes / ranks : bytes / 2, in: \.temporaries, "gradient all-reduce")
            }
        case .one:
            // The ring reduces each unit in the full gradient; one scratch of the largest shard receives.
            briefly(shard.max() ?? 0, in: \.communication, "gradient reduce-scatter")
        case .two, .three:
            break
        }
    }
}
