import Checkpoints
import Collectives
import Foundation
import Models
import Sharding
import Training

/// Start-up shared by the commands: where the weights come from, the trainer, and the banner.
enum Session {
    /// Rank 0 prints; the others stay quiet (errors go to stderr on every rank).
    static func leaderLog(_ communicator: Communicator) -> (String) -> Void {
        communicator.rank == 0 ? { print($0) } : { _ in }
    }

    /// The weights to start from: a checkpoint's tensors (read range by range), or random from the seed.
    static func initializer(config: ModelConfig, modelName: String, seed: UInt64) throws
        -> (Int, Range<Int>, UnsafeMutableBufferPointer<Float>) throws -> Void
    {
        let layout = ParameterLayout(config: config)
        if let weights = try weightsSource(modelName) {
            return { unit, range, destination in
                try ModelCheckpoint.fill(destination, unit: unit, elements: range, layout: layout,
                                         source: weights.source, sourcePath: weights.path)
            }
        }
        return { unit, range, destination in
            ParameterInitialization.fill(destination, unit: unit, elements: range, layout: layout, config: config, seed: seed)
        }
    }

    /// The checkpoint's tensors under HF names (an HF directory or a GGUF file); nil for a preset or a bare config.json.
    static func weightsSource(_ modelName: String) throws -> (source: any TensorSource, path: String)? {
        try ModelSource.open(modelName).weights.map { ($0, $0.location) }
    }

    static func makeTrainer(config: ModelConfig, options: TrainingOptions, communicator: Communicator,
                            examples: [SFTExample], modelName: String) throws -> Trainer {
        let log = leaderLog(communicator)
        let initialize = try initializer(config: config, modelName: modelName, seed: options.seed)
        let trainer = try Trainer(config: config, options: options, communicator: communicator, examples: examples,
                                  initialize: initialize, log: log)
        let psi = trainer.model.layout.parameterCount
        log("zero-sft: \(modelName) (\(config.modelType), \(config.numHiddenLayers) layers, d \(config.hiddenSize), "
            + "\(String(format: "%.2f", Double(psi) / 1e6))M parameters) on \(communicator.size) rank(s), ZeRO \(options.stage)")
        log("data: \(trainer.plan.report.summary)")
        log("plan: \(trainer.totalSteps) steps × \(trainer.plan.rowsPerStep) rows of \(options.sequenceLength) "
            + "(\(options.microBatchSize) per micro-batch × \(options.gradientAccumulation) accumulation × \(communicator.size) ranks)")
        if options.debug { log(trainer.engine.plan.describe()) }
        let ledgers = try trainer.ledgers()
        for ledger in ledgers {
            log("memory rank \(ledger.rank): \(ledger.brief) (model states \(MemoryLedger.format(ledger.modelStates)))")
        }
        return trainer
    }
}
