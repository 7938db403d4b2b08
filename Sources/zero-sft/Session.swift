import Checkpoints
import Collectives
import Foundation
import Kernels
import Logging
import ModelIO
import Models
import Sharding
import Training

/// Start-up shared by the commands: where the weights come from, the trainer, and the banner.
enum Session {
    /// The logger of a command, `zero-sft.COMMAND` (``RankLogHandler``: rank 0 prints `info` on stdout,
    /// warnings once on stderr, errors from every rank; `debug` is the `--debug` level).
    static func logger(_ command: String, debug: Bool = false) -> Logger { .zeroSFT("zero-sft.\(command)", debug: debug) }

    /// How `--model` was resolved, when the user should know: a warning each, printed once per job (rank 0).
    static func warn(_ source: ModelSource) {
        let logger = logger("model")
        for warning in source.warnings { logger.warning("\(warning)") }
    }

    /// `initialize`: where the parameters come from instead of `source` (a checkpoint resumed from).
    static func makeTrainer(source: ModelSource, options: TrainingOptions, communicator: Communicator,
                            examples: any ExampleSource,
                            initialize: ((_ unit: Int, _ elements: Range<Int>, _ destination: UnsafeMutableBufferPointer<Float>) throws -> Void)? = nil
    ) throws -> Trainer {
        let logger = logger("train", debug: options.debug)
        let config = source.config, modelName = source.name
        // The weights to start from: the checkpoint's tensors (read range by range), or random from the seed.
        let initialize = initialize ?? ModelExport.initializer(for: source, seed: options.seed)
        let trainer = try Trainer(config: config, options: options, communicator: communicator, examples: examples,
                                  initialize: initialize, logger: logger)
        let psi = trainer.model.layout.parameterCount
        logger.info(.init(stringLiteral: "zero-sft: \(modelName) (\(config.modelType), \(config.numHiddenLayers) layers, d \(config.hiddenSize), "
            + "\(String(format: "%.2f", Double(psi) / 1e6))M parameters) on \(communicator.size) rank(s), ZeRO \(options.stage)"
            + (options.parameterDType != .bf16 ? "" : options.stage.shardsParameters && communicator.size > 1
                ? ", parameters read and all-gathered in bf16 (fp32 masters)" : ", parameters read in bf16 (fp32 masters)")))
        logger.info("gemm: \(BLAS.precision == .bf16 ? "bf16 operands, fp32 sums (\(BLAS.bf16Details ?? "oneDNN"))" : "fp32 (\(BLAS.libraryDetails))"), \(BLAS.threadCount) thread(s) per rank")
        logger.info("data: \(trainer.plan.report.summary)")
        logger.info(.init(stringLiteral: "plan: \(trainer.totalSteps) steps × \(trainer.plan.rowsPerStep) rows of \(options.sequenceLength) "
            + "(\(options.microBatchSize) per micro-batch × \(options.gradientAccumulation) accumulation × \(communicator.size) ranks); "
            + Self.describeEpochs(trainer.epochSteps, totalSteps: trainer.totalSteps, maxSteps: options.maxSteps)))
        logger.debug("\(trainer.engine.plan.describe())")
        let hosts = try communicator.hostNames()
        logger.info("ranks: \(Communicator.describePlacement(hosts))")
        let ledgers = try trainer.ledgers()
        for ledger in ledgers {
            let host = hosts.indices.contains(ledger.rank) ? " (\(hosts[ledger.rank]))" : ""
            logger.info("memory rank \(ledger.rank)\(host): \(ledger.brief) (model states \(MemoryLedger.format(ledger.modelStates)))")
        }
        return trainer
    }

    /// "3 epochs of 57, 58, 57 steps"; with --max-steps (`steps` holds the first epoch only), how far
    /// that goes at the first epoch's size.
    static func describeEpochs(_ steps: [Int], totalSteps: Int, maxSteps: Int?) -> String {
        if maxSteps != nil {
            let first = max(1, steps.first ?? 1)
            return "epoch 1 has \(first) steps" + (totalSteps == first ? "" : String(format: " (≈ %.2f epochs)", Double(totalSteps) / Double(first)))
        }
        let counts = steps.count <= 6 ? steps.map(String.init).joined(separator: ", ")
            : "\(steps.min() ?? 0)–\(steps.max() ?? 0) (\(steps.reduce(0, +)) in all)"
        return steps.count == 1 ? "1 epoch of \(counts) steps" : "\(steps.count) epochs of \(counts) steps"
    }

    /// After the ranks agreed to stop on `signal` (``TrainingOutcome/stopped(signal:)``): every rank runs
    /// `save` (unless no step ran), which returns the checkpoint's path and whether it wrote it now (false:
    /// `--save-every` saved this step already), or nil without `--output-dir`; rank 0 says which signal,
    /// after which step and where the checkpoint is (stderr), and the exit status is 128 + signal (143
    /// SIGTERM, 130 SIGINT).
    ///
    /// Under `launch/run` (``StopSignals/isRelayed``) the ranks exit 0 and `launch/run` exits 128 + signal:
    /// Open MPI 4.1's `mpirun` answers a rank's non-zero exit with its kill sequence, whose sleeps
    /// (2 × `odls_base_sigkill_timeout`, 60 s under `launch/run`) it waits out even when every rank has exited.
    static func stop(_ trainer: Trainer, signal: Int32, save: (Trainer) throws -> (path: String, savedNow: Bool)?) throws -> Int32 {
        let logger = logger("train")
        let steps = "after step \(trainer.completedSteps) of \(trainer.totalSteps)"
        let code = StopSignals.exitCode(signal)
        let status = StopSignals.isRelayed ? 0 : code
        guard trainer.completedSteps > 0 else {
            logger.warning("stopped by \(StopSignals.name(signal)) before step 1: nothing to save (exit \(code))")
            return status
        }
        let started = Date()
        if let (location, savedNow) = try save(trainer) {
            logger.warning(.init(stringLiteral: "stopped by \(StopSignals.name(signal)) \(steps): "
                + (savedNow ? "saved a checkpoint to \(location) " + String(format: "in %.1f s", Date().timeIntervalSince(started))
                            : "its checkpoint \(location) was saved at this step already")
                + " (exit \(code))"))
        } else {
            logger.warning("stopped by \(StopSignals.name(signal)) \(steps): nothing saved (no --output-dir) (exit \(code))")
        }
        return status
    }
}
