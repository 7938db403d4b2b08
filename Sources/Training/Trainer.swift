import Checkpoints
import Collectives
import Foundation
import Kernels
import Logging
import Models
import Sharding

/// Everything a training run is configured with (validated before any rank starts work).
public struct TrainingOptions: Sendable, Codable, Equatable {
    public var stage: ZeroStage = .three
    /// Stages 2–3: gradient reduce-scatters a rank keeps in flight (each holds a full-size buffer).
    public var reductionsInFlight = ZeroEngine.defaultReductionsInFlight
    /// Stage 3: units gathered ahead of the one in use (`--prefetch-depth`).
    public var prefetchDepth = ShardedParameters.defaultPrefetchDepth
    /// The dtype parameters are all-gathered in and read by the model in (`--param-dtype`, FSDP's `param_dtype`).
    public var parameterDType = ParameterDType.fp32
    public var microBatchSize = 4
    public var sequenceLength = 512
    public var gradientAccumulation = 1
    /// Peak learning rate: 2e-5, TRL's `SFTConfig` default (fine-tuning rates are 5e-6 to 5e-5; 3e-4 is a
    /// pretraining rate and quickly destroys what a pretrained model knows).
    public var learningRate = 2e-5
    public var minimumLearningRate = 0.0
    public var warmupSteps = 0
    /// Optimizer steps; nil: `epochs` epochs.
    public var maxSteps: Int? = nil
    /// Epochs to train when `maxSteps` is nil (nil: one); giving both is an error.
    public var epochs: Int? = nil
    /// How examples are packed into rows (``PackingMethod``).
    public var packing = PackingMethod.bfd
    public var weightDecay = 0.0
    public var beta1 = 0.9
    public var beta2 = 0.999
    public var epsilon = 1e-8
    /// Global gradient-norm clipping threshold; 0 disables clipping.
    public var clipGradientNorm = 1.0
    public var seed: UInt64 = 42
    public var shuffle = true
    public var logEvery = 1
    public var metricsFile: String? = nil
    public var debug = false

    public init() {}

    /// The largest `--seq-len` any command accepts (2^27 tokens: far past every model's context; the memory planner refuses far less on a real host).
    public static let maximumSequenceLength = 1 << 27
    /// The largest `--micro-batch-size` and `--grad-accum` (2^20), so that rows per step cannot overflow.
    public static let maximumRows = 1 << 20

    /// Rejects every option outside its range, naming it; NaN and infinities included.
    public func validate() throws {
        func check(_ ok: Bool, _ message: String) throws { if !ok { throw OptionError(message: message) } }
        let rows = Self.maximumRows, tokens = Self.maximumSequenceLength
        try check(reductionsInFlight >= 1, "--reductions-in-flight must be at least 1 (got \(reductionsInFlight))")
        try check(prefetchDepth >= 1, "--prefetch-depth must be at least 1 (got \(prefetchDepth))")
        try check((1...rows).contains(microBatchSize), "--micro-batch-size must be in [1, \(rows)] (got \(microBatchSize))")
        try check((2...tokens).contains(sequenceLength), "--seq-len must be in [2, \(tokens)] (got \(sequenceLength))")
        try check(sequenceLength * microBatchSize <= 1 << 32,
                  "--seq-len \(sequenceLength) × --micro-batch-size \(microBatchSize) tokens per micro-batch: far beyond any host's memory (at most 2^32)")
        try check((1...rows).contains(gradientAccumulation), "--grad-accum must be in [1, \(rows)] (got \(gradientAccumulation))")
        try check(learningRate > 0 && learningRate.isFinite, "--lr must be a positive number (got \(learningRate))")
        try check(minimumLearningRate >= 0 && minimumLearningRate <= learningRate,
                  "--min-lr must be in [0, --lr] = [0, \(learningRate)] (got \(minimumLearningRate))")
        try check(warmupSteps >= 0, "--warmup-steps must not be negative (got \(warmupSteps))")
        try check(maxSteps.map { $0 >= 1 } ?? true, "--max-steps must be at least 1 (got \(maxSteps ?? 0))")
        try check(epochs.map { $0 >= 1 } ?? true, "--epochs must be at least 1 (got \(epochs ?? 0))")
        try check(maxSteps == nil || epochs == nil,
                  "--max-steps \(maxSteps ?? 0) and --epochs \(epochs ?? 0) both set the run's length: give one of them")
        try check(weightDecay >= 0 && weightDecay.isFinite, "--weight-decay must be a finite number, 0 or more (got \(weightDecay))")
        try check(weightDecay * learningRate <= 1,
                  "--weight-decay × --lr must be at most 1 (AdamW multiplies the weights by 1 − lr × decay; got \(weightDecay) × \(learningRate))")
        try check(clipGradientNorm >= 0 && clipGradientNorm.isFinite,
                  "--clip-grad-norm must be a finite number, 0 (off) or more (got \(clipGradientNorm))")
        try check(logEvery >= 1, "--log-every must be at least 1 (got \(logEvery))")
        try check((0..<1).contains(beta1) && (0..<1).contains(beta2), "AdamW betas must be in [0, 1)")
    }
}

public struct OptionError: Error, CustomStringConvertible {
    public var message: String
    public init(message: String) { self.message = message }
    public var description: String { message }
}

/// One logged optimizer step, as printed and as written to `--metrics-file` (one JSON object per line).
public struct StepMetrics: Sendable, Codable, Equatable {
    public var step: Int
    public var loss: Double
    public var lr: Double
    public var gradNorm: Double
    public var tokensPerSec: Double
    public var supervisedTokens: Int
    public var tokens: Int
    public var stepSeconds: Double
    /// Forward and backward of all micro-batches (including the collectives inside them).
    public var computeSeconds: Double
    /// Gradient reduction, norm, AdamW and the parameter all-gather.
    public var optimizerSeconds: Double
    public var parameterChecksum: Double?
    public var memory: [MemoryLedger]
    /// This rank's collectives during the step (rank 0's in the metrics file): bytes sent under the
    /// ring model of the ZeRO paper, collectives started and seconds waited for them
    /// (``CommunicationCounters``); without the memory ledger's gather and the `--debug` checksum.
    public var communication: CommunicationCounters = CommunicationCounters()

    enum CodingKeys: String, CodingKey {
        case step, loss, lr, tokens, memory, communication
        case gradNorm = "grad_norm"
        case tokensPerSec = "tokens_per_sec"
        case supervisedTokens = "supervised_tokens"
        case stepSeconds = "step_seconds"
        case computeSeconds = "compute_seconds"
        case optimizerSeconds = "optimizer_seconds"
        case parameterChecksum = "parameter_checksum"
    }
}

/// The per-rank training loop: one synchronous, deterministic loop; MPI calls on this thread only.
public final class Trainer {
    public let config: ModelConfig
    public let options: TrainingOptions
    public let communicator: Communicator
    public let model: DecoderModel
    public let engine: ZeroEngine
    public private(set) var plan: TrainingPlan
    public let schedule: LearningRateSchedule
    public let totalSteps: Int
    /// Optimizer steps of each epoch the run covers (with `--max-steps`, of the first epoch only: later
    /// ones are packed when reached). Each epoch is packed from its own shuffle, so the counts may differ.
    public let epochSteps: [Int]
    public private(set) var history: [StepMetrics] = []
    /// The first step this process runs: 0, or the step of the checkpoint it resumed from.
    public private(set) var startStep = 0
    /// Optimizer steps completed (what a checkpoint saved now records).
    public private(set) var completedSteps = 0
    /// Rank 0: every metrics line of the run so far (JSON, no newline), restored ones included: what a
    /// checkpoint's `metrics.jsonl` holds. Any kind of record (steps, evaluations) goes through ``appendMetrics(_:)``.
    public private(set) var metricsLines: [String] = []
    private var metricsHandle: FileHandle?
    /// Every rank: the metrics lines of the checkpoint resumed from (the evaluator's history is in them).
    private var restoredMetricsLines: [String] = []
    /// Step lines at `info` (printed by rank 0), the `--debug` checksum at `debug` (``RankLogHandler``).
    public let logger: Logger
    /// Evaluation during training (`--eval-data`, `--val-fraction`): at step 0, every N steps and at the end.
    public var evaluator: TrainingEvaluator?
    /// Set when the evaluator's patience ran out and ``train()`` returned before `totalSteps`.
    public private(set) var earlyStop: EarlyStop?
    /// The test hook `ZERO_SFT_FAULT` (``FaultInjection``), parsed by the command; nil: no fault.
    public var fault: FaultInjection?

    /// Sets up the model and this rank's share of the state. `initialize` fills parameter ranges
    /// (random init or a checkpoint); it is called only for the ranges this rank keeps.
    public init(
        config: ModelConfig, options: TrainingOptions, communicator: Communicator, examples: any ExampleSource,
        initialize: (_ unit: Int, _ elements: Range<Int>, _ destination: UnsafeMutableBufferPointer<Float>) throws -> Void,
        logger: Logger = .zeroSFT("zero-sft.train")
    ) throws {
        try options.validate()
        self.config = config
        self.options = options
        self.communicator = communicator
        var logger = logger
        if options.debug { logger.logLevel = .debug }
        self.logger = logger
        plan = TrainingPlan(examples: examples, sequenceLength: options.sequenceLength, microBatchSize: options.microBatchSize,
                            gradientAccumulation: options.gradientAccumulation, ranks: communicator.size,
                            seed: options.seed, shuffle: options.shuffle, packing: options.packing)
        guard !plan.kept.isEmpty else {
            throw OptionError(message: "no example has a supervised token: nothing to train on (\(plan.report.summary))")
        }
        if let maxSteps = options.maxSteps {
            // Later epochs are packed when the run reaches them (--max-steps may be far beyond the data).
            epochSteps = plan.stepsPerEpoch(epochs: 1)
            totalSteps = maxSteps
        } else {
            // The learning-rate schedule spans every epoch.
            epochSteps = plan.stepsPerEpoch(epochs: options.epochs ?? 1)
            totalSteps = epochSteps.reduce(0, +)
        }
        schedule = LearningRateSchedule(peak: options.learningRate, warmupSteps: options.warmupSteps,
                                        totalSteps: totalSteps, minimum: options.minimumLearningRate)
        model = DecoderModel(config: config, maxTokens: plan.maxTokensPerMicroBatch)
        model.checkFinite = options.debug
        let optimizer = AdamW(beta1: Float(options.beta1), beta2: Float(options.beta2), epsilon: Float(options.epsilon),
                              weightDecay: Float(options.weightDecay))
        engine = try ZeroEngine(layout: model.layout, stage: options.stage, communicator: communicator,
                                optimizer: optimizer, reductionsInFlight: options.reductionsInFlight,
                                prefetchDepth: options.prefetchDepth, parameterDType: options.parameterDType,
                                initialize: initialize)
    }

    public var isLeader: Bool { communicator.rank == 0 }

    /// This rank's memory for the training data (the ledger's `data` category), measured once.
    public private(set) lazy var dataMemory = DataMemory(plan: plan)

    /// The memory ledger of every rank (a collective).
    public func ledgers() throws -> [MemoryLedger] {
        try MemoryLedger.gather(MemoryLedger(engine: engine, activationBytes: model.activationBytes, data: dataMemory), communicator: communicator)
    }

    /// Runs optimizer steps `startStep..<totalSteps`, logging on rank 0 and appending to the metrics
    /// file, or fewer when a stop is requested or the evaluator's patience runs out.
    ///
    /// - `afterStep(completed)` runs after each step on every rank (`--save-every` saves there).
    /// - With an ``evaluator``: evaluates at step 0, when due and at the end (before `afterStep`, so a
    ///   checkpoint holds the evaluation of its step); returns ``TrainingOutcome/finished`` early, with
    ///   ``earlyStop`` set, when its patience runs out. A resumed run restores the evaluator's history and
    ///   patience from the checkpoint's metrics.
    /// - `stopRequest` is read on every rank before each step (``StopSignals/received`` for the commands:
    ///   0, or the SIGTERM/SIGINT this rank received); the ranks agree on it inside the step's first
    ///   all-reduce (``trainStep(_:stopRequest:)``), so when any rank asks, every rank stops before the
    ///   same step, after the previous step's collectives completed, and the result is
    ///   ``TrainingOutcome/stopped(signal:)`` with ``completedSteps`` steps done. During an evaluation it
    ///   is read, and agreed on, before every forward: the evaluation is abandoned, not recorded, and a
    ///   run resumed from ``completedSteps`` evaluates that step first.
    @discardableResult
    public func train(stopRequest: @escaping () -> Int32 = { 0 }, afterStep: (_ completedSteps: Int) throws -> Void = { _ in }) throws -> TrainingOutcome {
        fault?.trigger(.load, step: startStep + 1, rank: communicator.rank)
        metricsHandle = try openMetricsFile()
        defer { try? metricsHandle?.close(); metricsHandle = nil }
        if startStep > 0 {
            try evaluator?.restore(from: restoredMetricsLines)
        }
        // Step 0's evaluation, or a resumed run's at its first step when the stop that saved the
        // checkpoint abandoned it (the uninterrupted run's metrics lines, in the same order).
        if startStep == 0 || evaluator?.hasEvaluated(step: startStep) == false {
            switch try evaluate(afterStep: startStep, stopRequest: stopRequest) {
            case .goOn: break
            case .earlyStop: return .finished
            case .stopped(let signal): return .stopped(signal: signal)
            }
        }
        for step in startStep..<totalSteps {
            let metrics: StepMetrics
            switch try trainStep(step, stopRequest: stopRequest()) {
            case .trained(let trained): metrics = trained
            case .stopped(let signal):
                if isLeader {
                    logger.info("\(StopSignals.name(signal)) received: stopping before step \(step + 1)/\(totalSteps) (\(step) steps done)")
                }
                return .stopped(signal: signal)
            }
            history.append(metrics)
            completedSteps = step + 1
            if isLeader, step % options.logEvery == 0 || step == totalSteps - 1 {
                logger.info(.init(stringLiteral: String(format: "step %d/%d | loss %.4f | lr %.2e | grad norm %.3f | %.0f tok/s | %d supervised | ",
                           step + 1, totalSteps, metrics.loss, metrics.lr, metrics.gradNorm, metrics.tokensPerSec, metrics.supervisedTokens)
                    + "max/rank: " + Self.maxima(metrics.memory).brief))
                let encoder = JSONEncoder()
                encoder.outputFormatting = [.sortedKeys]
                try appendMetrics(encoder.encode(metrics), record: "step \(step + 1)")
            }
            switch try evaluate(afterStep: step + 1, stopRequest: stopRequest) {
            case .goOn: break
            case .earlyStop: return .finished
            case .stopped(let signal): return .stopped(signal: signal)
            }
            try afterStep(step + 1)
        }
        return .finished
    }

    /// What an evaluation during ``train(stopRequest:afterStep:)`` decided.
    private enum EvaluationOutcome {
        case goOn, earlyStop
        /// A stop signal arrived during the evaluation: it was abandoned (nothing recorded).
        case stopped(signal: Int32)
    }

    /// The evaluator's scores after `completed` optimizer steps, when due (a collective on every rank):
    /// logged and written to the metrics file by rank 0. The ranks agree on `stopRequest` before every
    /// forward of the evaluation (``Evaluation/run(_:config:store:communicator:sequenceLength:tokensPerForward:stopRequest:)``),
    /// so a SIGTERM during a long evaluation stops the run within one forward instead of after the whole
    /// evaluation (past a scheduler's grace period, the stop's checkpoint would be lost); the abandoned
    /// evaluation is not recorded, and a run resumed from step `completed` evaluates it first.
    private func evaluate(afterStep completed: Int, stopRequest: @escaping () -> Int32) throws -> EvaluationOutcome {
        guard let evaluator, evaluator.isDue(afterStep: completed, of: totalSteps) else { return .goOn }
        let metrics: EvaluationMetrics, stop: EarlyStop?
        do {
            (metrics, stop) = try evaluator.evaluate(step: completed, config: config, store: engine, communicator: communicator,
                                                     stopRequest: stopRequest)
        } catch let stopped as EvaluationStopped {
            if isLeader {
                logger.info(.init(stringLiteral: "\(StopSignals.name(stopped.signal)) received during the evaluation at step \(completed): "
                    + "stopping (the evaluation is abandoned; a run resumed from step \(completed) evaluates it first)"))
            }
            return .stopped(signal: stopped.signal)
        }
        if isLeader {
            logger.info("\(evaluator.describe(metrics))")
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.sortedKeys]
            try appendMetrics(encoder.encode(metrics), record: "the evaluation at step \(completed)")
        }
        guard let stop else { return .goOn }
        earlyStop = stop
        completedSteps = completed
        if isLeader { logger.info("\(stop)") }
        return .earlyStop
    }

    /// Rank 0: records one JSON object (no newline) in ``metricsLines`` and, during ``train(afterStep:)``,
    /// appends it to `--metrics-file`.
    /// `record` names the line in an error ("step 12", "the evaluation at step 10").
    public func appendMetrics(_ json: Data, record: String = "a line") throws {
        guard isLeader else { return }
        metricsLines.append(String(decoding: json, as: UTF8.self))
        guard let metricsHandle else { return }
        var line = json
        line.append(UInt8(ascii: "\n"))
        try Self.append(line, to: metricsHandle, path: options.metricsFile ?? "metrics file", record: record)
    }

    /// Continues a run from a checkpoint saved after `step` optimizer steps: the next step is `step + 1`,
    /// AdamW's bias correction counts `optimizerSteps`, and `metricsLines` (the checkpoint's
    /// `metrics.jsonl`, read by every rank) are the metrics so far. Parameters and moments are already
    /// in the engine.
    public func resume(step: Int, optimizerSteps: Int, metricsLines: [String]) {
        precondition(step >= 0 && step <= totalSteps, "Trainer.resume: step \(step) of \(totalSteps)")
        startStep = step
        completedSteps = step
        engine.adamW.resume(stepCount: optimizerSteps)
        restoredMetricsLines = metricsLines
        if isLeader { self.metricsLines = metricsLines }
    }

    /// One optimizer step that no rank asks to stop (``bench`` and tests); throws if another rank asks.
    public func trainStep(_ step: Int) throws -> StepMetrics {
        switch try trainStep(step, stopRequest: 0) {
        case .trained(let metrics): return metrics
        case .stopped(let signal):
            throw TrainingError(step: step + 1, microBatch: nil, rank: communicator.rank,
                                underlying: OptionError(message: "another rank asked to stop (\(StopSignals.name(signal)))"))
        }
    }

    /// One optimizer step: all micro-batches forward and backward, the gradient reduction, clipping, AdamW;
    /// or none, when any rank's `stopRequest` is a signal (SIGTERM, SIGINT; 0: no request).
    ///
    /// The stop requests travel in the all-reduce of the step's token counts (two more `Int64`s: the
    /// number of ranks asking with SIGINT and with another signal), so agreeing costs no extra collective.
    /// If any rank asks, every rank returns ``StepResult/stopped(signal:)`` before touching the model:
    /// SIGTERM (a scheduler's) wins over SIGINT when ranks received different signals.
    public func trainStep(_ step: Int, stopRequest: Int32) throws -> StepResult {
        let started = Date()
        let countersBefore = communicator.counters
        communicator.context = "step \(step + 1)"  // named by a collective timeout or --debug mismatch
        let batches = plan.microBatches(step: step, rank: communicator.rank)
        // The loss is normalised by the supervised tokens of the whole step, on all ranks.
        let localCounts = [Int64(batches.reduce(0) { $0 + $1.supervisedCount }), Int64(batches.reduce(0) { $0 + $1.count })]
            + StopSignals.agreementCounts(stopRequest)
        let globalCounts = try communicator.allReduce(localCounts, .sum)
        if let signal = StopSignals.agreed(globalCounts[2...]) { return .stopped(signal: signal) }
        let supervised = Int(globalCounts[0]), tokens = Int(globalCounts[1])
        // Packing keeps only examples with a supervised token, so every step has one; a step without would
        // divide by zero (every rank has the same global counts and throws alike).
        guard supervised > 0 else {
            throw TrainingError(step: step + 1, microBatch: nil, rank: communicator.rank,
                                underlying: OptionError(message: "the step has no supervised token: its loss is undefined"))
        }
        let scale: Float = supervised > 0 ? 1 / Float(supervised) : 0
        var lossSum = 0.0
        if let fault {
            fault.trigger(.forward, step: step + 1, rank: communicator.rank)
            let kill: (() -> Void)? = { fault.killThisProcess() }
            model.beforeBackward = fault.isDue(.backward, step: step + 1, rank: communicator.rank) ? kill : nil
        }
        for (micro, batch) in batches.enumerated() {
            do {
                lossSum += try model.step(batch, store: engine, lossScale: scale, training: true).lossSum
            } catch let error as NonFiniteValueError {
                throw TrainingError(step: step + 1, microBatch: micro, rank: communicator.rank, underlying: error)
            }
        }
        let computed = Date()
        fault?.trigger(.reduce, step: step + 1, rank: communicator.rank)
        let gradNorm = try engine.reduceGradients()
        let lr = schedule.rate(at: step)
        var clip: Float = 1
        if options.clipGradientNorm > 0, gradNorm > options.clipGradientNorm {
            clip = Float(options.clipGradientNorm / (gradNorm + 1e-6))
        }
        if !gradNorm.isFinite {
            throw TrainingError(step: step + 1, microBatch: nil, rank: communicator.rank,
                                underlying: OptionError(message: "gradient norm is \(gradNorm)"))
        }
        fault?.trigger(.optimizer, step: step + 1, rank: communicator.rank)
        if supervised > 0 { try engine.optimizerStep(learningRate: Float(lr), gradientScale: clip) }
        let optimized = Date()
        let globalLoss = try communicator.allReduce(lossSum, .sum)
        let seconds = Date().timeIntervalSince(started)
        let communication = communicator.counters.subtracting(countersBefore)
        let checksum = options.debug ? try engine.parameterChecksum() : nil
        if let checksum { logger.debug("\(String(format: "  debug: step %d parameter checksum %.9e", step + 1, checksum))") }
        return .trained(StepMetrics(step: step + 1, loss: supervised > 0 ? globalLoss / Double(supervised) : 0, lr: lr, gradNorm: gradNorm,
                           tokensPerSec: Double(tokens) / seconds, supervisedTokens: supervised, tokens: tokens,
                           stepSeconds: seconds, computeSeconds: computed.timeIntervalSince(started),
                           optimizerSeconds: optimized.timeIntervalSince(computed), parameterChecksum: checksum, memory: try ledgers(),
                           communication: communication))
    }

    static func maxima(_ ledgers: [MemoryLedger]) -> MemoryLedger {
        var m = MemoryLedger()
        for l in ledgers {
            m.parameters = max(m.parameters, l.parameters); m.gatheredParameters = max(m.gatheredParameters, l.gatheredParameters)
            m.gradients = max(m.gradients, l.gradients); m.gradientBuffers = max(m.gradientBuffers, l.gradientBuffers)
            m.optimizerMoments = max(m.optimizerMoments, l.optimizerMoments); m.activations = max(m.activations, l.activations)
            m.communication = max(m.communication, l.communication); m.peakRSS = max(m.peakRSS, l.peakRSS)
            m.currentRSS = max(m.currentRSS, l.currentRSS)
            m.data = max(m.data, l.data); m.mappedData = max(m.mappedData, l.mappedData)
        }
        return m
    }

    /// Appends one JSON line; a failed write (a full or read-only file system) is cut back to the
    /// previous line's end, so the file never ends with half a line, and names the file and the step.
    static func append(_ line: Data, to handle: FileHandle, path: String, record: String) throws {
        let end = try FileOperation.perform("find the end of the metrics file", path: path) { try handle.offset() }
        do {
            try FileOperation.perform("append \(record) to the metrics file", path: path) { try handle.write(contentsOf: line) }
        } catch {
            try? handle.truncate(atOffset: end)
            throw error
        }
    }


    /// Rank 0 opens `--metrics-file`: a fresh run truncates it; a resumed run keeps the lines of steps
    /// up to its checkpoint (or writes the checkpoint's lines when the file is gone) and appends, so no
    /// step appears twice. Lines of later steps (logged after the checkpoint, then lost) move to
    /// `FILE.superseded`: nothing is dropped.
    private func openMetricsFile() throws -> FileHandle? {
        guard isLeader, let path = options.metricsFile else { return nil }
        let url = URL(fileURLWithPath: path)
        var contents = Data()
        if startStep > 0 {
            var kept = metricsLines, superseded: [Substring] = []
            if let existing = try? String(contentsOf: url, encoding: .utf8) {
                kept = []
                for line in existing.split(separator: "\n") where !line.isEmpty {
                    let step = (try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])?["step"] as? Int
                    if let step, step > startStep { superseded.append(line) } else { kept.append(String(line)) }
                }
            }
            if !superseded.isEmpty {
                let aside = path + ".superseded"
                let text = Data((superseded.joined(separator: "\n") + "\n").utf8)
                try FileOperation.perform("append superseded metrics lines", path: aside) {
                    if FileManager.default.fileExists(atPath: aside) {
                        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: aside))
                        defer { try? handle.close() }
                        try handle.seekToEnd()
                        try handle.write(contentsOf: text)
                    } else {
                        try text.write(to: URL(fileURLWithPath: aside))
                    }
                }
                logger.info("metrics file: \(superseded.count) line(s) of steps after the checkpoint (step \(startStep)) moved to \(aside)")
            }
            metricsLines = kept
            contents = Data(kept.map { $0 + "\n" }.joined().utf8)
        }
        if startStep > 0 {
            try FileOperation.perform("rewrite the metrics file up to the checkpoint", path: path) { try contents.write(to: url, options: .atomic) }
        } else if !FileManager.default.createFile(atPath: url.path, contents: nil) {
            let code = errno
            throw FileOperationError(path: path, operation: "create the metrics file", reason: "\(String(cString: strerror(code))) (errno \(code))")
        }
        let handle = try FileOperation.perform("open for writing", path: path) { try FileHandle(forWritingTo: url) }
        _ = try FileOperation.perform("seek to the end", path: path) { try handle.seekToEnd() }
        return handle
    }
}

/// How ``Trainer/train(stopRequest:)`` ended.
public enum TrainingOutcome: Sendable, Equatable {
    /// Every planned step ran.
    case finished
    /// The ranks agreed to stop at a step boundary because of `signal` (SIGTERM or SIGINT);
    /// ``Trainer/completedSteps`` steps ran. The command saves and exits 128 + signal.
    case stopped(signal: Int32)
}

/// What ``Trainer/trainStep(_:stopRequest:)`` did.
public enum StepResult: Sendable {
    /// The step ran.
    case trained(StepMetrics)
    /// A rank asked to stop; no rank ran the step.
    case stopped(signal: Int32)
}

/// A failure inside a training step, naming the step, the micro-batch and the rank.
public struct TrainingError: Error, CustomStringConvertible {
    public var step: Int
    public var microBatch: Int?
    public var rank: Int
    public var underlying: Error
    public var description: String {
        "step \(step)\(microBatch.map { ", micro-batch \($0)" } ?? ""), rank \(rank): \(underlying)"
    }
}
