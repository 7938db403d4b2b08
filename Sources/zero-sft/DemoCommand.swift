import ArgumentParser
import Collectives
import Foundation
import Logging
import ModelIO
import Models
import Sharding
import Training

/// `zero-sft` with no arguments: a small model learns the built-in question set, visibly.
struct DemoCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "demo",
        abstract: "The built-in job: a small model learns to answer a fixed set of questions; prints its answers before and after.")

    @Option(name: .long, help: "Model preset.") var model: String = "small"
    @Option(name: .long, help: "ZeRO stage.") var zeroStage: ZeroStage = .three
    @Option(name: .long, help: "Optimizer steps.") var maxSteps: Int = 80
    @Option(name: .long, help: "Peak learning rate.") var lr: Double = 3e-3
    @Option(name: .long, help: "Seed.") var seed: UInt64 = 7
    @Option(name: .long, help: "Write one JSON object per step to this file (rank 0).") var metricsFile: String?
    @OptionGroup var collectives: CollectiveOptions
    @OptionGroup var blasOptions: BLASOptions

    func validate() throws {
        guard maxSteps >= 1 else { throw ValidationError("--max-steps must be at least 1 (got \(maxSteps))") }
        guard lr > 0, lr.isFinite else { throw ValidationError("--lr must be a positive number (got \(lr))") }
    }

    func run() throws {
        try blasOptions.apply()
        guard ModelPreset.config(named: model) != nil else {
            throw ValidationError("unknown preset \(model): \(ModelPreset.all.map(\.name).joined(separator: ", "))")
        }
        let source = try ModelSource.open(model)
        let config = source.config
        var options = TrainingOptions()
        options.clipGradientNorm = 1
        options.stage = zeroStage
        options.sequenceLength = 128
        options.microBatchSize = 2
        options.maxSteps = maxSteps
        options.learningRate = lr
        options.warmupSteps = maxSteps / 10
        options.minimumLearningRate = lr / 10
        options.weightDecay = 0.0
        options.seed = seed
        options.logEvery = max(1, maxSteps / 12)
        options.metricsFile = metricsFile
        let collectives = collectives
        collectives.prepareProcess()
        Job.run { (communicator: Communicator) throws -> Void in
            try collectives.apply(to: communicator, checkingConsistency: false)
            // Every step sees the whole question set (8 rows of 128 tokens), however many ranks share it.
            options.gradientAccumulation = max(1, 4 / communicator.size)
            let logger = Session.logger("demo")
            let trainer = try Session.makeTrainer(source: source, options: options, communicator: communicator,
                                                  examples: DemoTask.examples())
            let questions = ["What is the capital of France?", "How many legs does a spider have?", "What is 12 + 30?", "Who wrote Hamlet?"]
            // Greedy answers from the trainer's parameters: at stage 3 every rank runs the generator
            // (each forward gathers the units), so every rank makes the same calls.
            let generator = Generator(config: config, capacity: options.sequenceLength)
            func answers(_ title: String) throws {
                logger.info("\(title)")
                for question in questions {
                    generator.reset()
                    var sampler = TokenSampler(SamplingOptions())
                    let reply = try generator.generate(after: DemoTask.prompt(question), store: trainer.engine.parameters, sampler: &sampler,
                                                       maxNewTokens: 24, stopTokens: [Int(DemoTask.endToken)]).tokens
                    logger.info("  Q: \(question)\n  A: \(DemoTask.decode(reply.map(Int32.init)))")
                }
            }
            try answers("before training:")
            try trainer.train()
            try answers("after training:")
            let evaluation = try Evaluation.run(trainer.plan.examples, config: config, store: trainer.engine.parameters,
                                                communicator: communicator, sequenceLength: options.sequenceLength,
                                                tokensPerForward: options.sequenceLength)
            logger.info("\(String(format: "final loss on the question set: %.4f over %d supervised tokens", evaluation.loss, evaluation.supervisedTokens))")
        }
    }
}
