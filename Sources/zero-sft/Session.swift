import Checkpoints
import Collectives
import Foundation
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

    static func makeTrainer(source: ModelSource, options: TrainingOptions, communicator: Communicator,
                            examples: any ExampleSource) throws -> Trainer {
        let logger = logger("train", debug: options.debug)
        let config = source.config, modelName = source.name
        // The weights to start from: the checkpoint's tensors (read range by range), or random from the seed.
        let initialize = ModelExport.initializer(for: source, seed: options.seed)
        let trainer = try Trainer(config: config, options: options, communicator: communicator, examples: examples,
                                  initialize: initialize, logger: logger)
        let psi = trainer.model.layout.parameterCount
        logger.info(.init(stringLiteral: "zero-sft: \(modelName) (\(config.modelType), \(config.numHiddenLayers) layers, d \(config.hiddenSize), "
            + "\(String(format: "%.2f", Double(psi) / 1e6))M parameters) on \(communicator.size) rank(s), ZeRO \(options.stage)"))
        logger.info("data: \(trainer.plan.report.summary)")
        logger.info(.init(stringLiteral: "plan: \(trainer.totalSteps) steps × \(trainer.plan.rowsPerStep) rows of \(options.sequenceLength) "
            + "(\(options.microBatchSize) per micro-batch × \(options.gradientAccumulation) accumulation × \(communicator.size) ranks)"))
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
}
