import Checkpoints
import Collectives
import Foundation
import ModelIO
import Models
import Sharding
import Training

/// Start-up shared by the commands: where the weights come from, the trainer, and the banner.
enum Session {
    /// Rank 0 prints; the others stay quiet (errors go to stderr on every rank).
    static func leaderLog(_ communicator: Communicator) -> (String) -> Void {
        communicator.rank == 0 ? { print($0) } : { _ in }
    }

    /// How `--model` was resolved, when the user should know (rank 0, on stderr).
    static func warn(_ source: ModelSource, _ communicator: Communicator?) {
        guard communicator?.rank ?? 0 == 0 else { return }
        for warning in source.warnings { FileHandle.standardError.write(Data("warning: \(warning)\n".utf8)) }
    }

    static func makeTrainer(source: ModelSource, options: TrainingOptions, communicator: Communicator,
                            examples: [SFTExample]) throws -> Trainer {
        let log = leaderLog(communicator)
        let config = source.config, modelName = source.name
        // The weights to start from: the checkpoint's tensors (read range by range), or random from the seed.
        let initialize = ModelExport.initializer(for: source, seed: options.seed)
        let trainer = try Trainer(config: config, options: options, communicator: communicator, examples: examples,
                                  initialize: initialize, log: log)
        let psi = trainer.model.layout.parameterCount
        log("zero-sft: \(modelName) (\(config.modelType), \(config.numHiddenLayers) layers, d \(config.hiddenSize), "
            + "\(String(format: "%.2f", Double(psi) / 1e6))M parameters) on \(communicator.size) rank(s), ZeRO \(options.stage)")
        log("data: \(trainer.plan.report.summary)")
        log("plan: \(trainer.totalSteps) steps × \(trainer.plan.rowsPerStep) rows of \(options.sequenceLength) "
            + "(\(options.microBatchSize) per micro-batch × \(options.gradientAccumulation) accumulation × \(communicator.size) ranks)")
        if options.debug { log(trainer.engine.plan.describe()) }
        let hosts = try communicator.hostNames()
        log("ranks: \(Communicator.describePlacement(hosts))")
        let ledgers = try trainer.ledgers()
        for ledger in ledgers {
            let host = hosts.indices.contains(ledger.rank) ? " (\(hosts[ledger.rank]))" : ""
            log("memory rank \(ledger.rank)\(host): \(ledger.brief) (model states \(MemoryLedger.format(ledger.modelStates)))")
        }
        return trainer
    }
}
