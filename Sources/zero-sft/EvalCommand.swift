import ArgumentParser
import Collectives
import Foundation
import Logging
import Kernels
import ModelIO
import Models
import Sharding
import Training

struct EvalCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "eval",
        abstract: "Print the masked loss of a dataset without training, sharded across the MPI ranks.",
        discussion: """
            Rank r evaluates examples r, r + N, …; the sums are all-reduced. The last line is one JSON object: \
            {"loss", "supervised_tokens", "tokens", "examples", "truncated_examples", "perplexity", "ranks", "seconds"}.
            """)

    @OptionGroup var modelOptions: ModelOptions
    @OptionGroup var text: TextDataOptions
    @Option(name: .long, help: "Data in any form train reads (text JSONL, pre-tokenized JSONL with -100 not scored, or a prepared token file).")
    var data: String
    @Option(name: .long, help: "Longer examples are scored on their first this many tokens (and counted).")
    var seqLen: Int = 2048
    @Option(name: .long, help: "Most tokens per forward on each rank (examples are packed up to it).")
    var tokensPerForward: Int = 4096
    @Option(name: .long, help: "0: every rank holds the whole model; 3: each rank holds a shard (parameters gathered per layer).")
    var zeroStage: ZeroStage = .zero
    @Option(name: .long, help: ArgumentHelp(
        "The dtype the model reads parameters in (as `train --param-dtype`): fp32, or bf16 (every parameter rounded to bf16; at --zero-stage 3 gathered in bf16).",
        discussion: "A run trained with --param-dtype bf16 scores its held-out sets in bf16: pass bf16 here to reproduce those losses from its saved (fp32) model.",
        valueName: "fp32|bf16"))
    var paramDtype: ParameterDType = .fp32
    @Option(name: .long, help: "Seed of the random initialisation (presets only).")
    var seed: UInt64 = 42
    @OptionGroup var collectives: CollectiveOptions
    @OptionGroup var blasOptions: BLASOptions

    func validate() throws {
        let tokens = TrainingOptions.maximumSequenceLength
        guard (2...tokens).contains(seqLen) else { throw ValidationError("--seq-len must be in [2, \(tokens)], got \(seqLen)") }
        guard (1...tokens).contains(tokensPerForward) else {
            throw ValidationError("--tokens-per-forward must be in [1, \(tokens)], got \(tokensPerForward)")
        }
        guard zeroStage == .zero || zeroStage == .three else { throw ValidationError("--zero-stage must be 0 or 3 for eval, got \(zeroStage)") }
    }

    func run() throws {
        try blasOptions.apply()
        let source = try modelOptions.resolve()
        let config = source.config
        let examples: any ExampleSource = PreparedFile.isPrepared(path: data)
            ? try text.openPrepared(data, fingerprint: { try text.fingerprint(setup: source.textSetup()) }, vocabularySize: config.vocabSize)
            : try text.load(data: data, source: source, vocabularySize: config.vocabSize).examples
        try EmptyEvaluationError.check(examples, sequenceLength: seqLen)
        let model = modelOptions.model, seqLen = seqLen, tokensPerForward = tokensPerForward, zeroStage = zeroStage, seed = seed
        let paramDtype = paramDtype
        let collectives = collectives
        collectives.prepareProcess()
        Job.run { (communicator: Communicator) throws -> Void in
            try collectives.apply(to: communicator, checkingConsistency: false)
            communicator.context = "evaluation"
            let logger = Session.logger("eval")
            Session.warn(source)
            let store: UnitStore
            if zeroStage == .three || paramDtype == .bf16 {
                // Parameters only: no gradient or optimizer memory (bf16 at stage 0: rounded copies per unit).
                store = try ShardedParameters(layout: ParameterLayout(config: config), stage: zeroStage, communicator: communicator,
                                              parameterDType: paramDtype, initialize: ModelExport.initializer(for: source, seed: seed))
            } else {
                store = try ModelExport.denseStore(for: source, seed: seed)
            }
            logger.info("zero-sft eval: \(model) on \(communicator.size) rank(s), \(examples.count) examples\(paramDtype == .bf16 ? ", parameters read in bf16" : "")")
            let result = try Evaluation.run(examples, config: config, store: store, communicator: communicator,
                                            sequenceLength: seqLen, tokensPerForward: tokensPerForward)
            logger.info(.init(stringLiteral: String(format: "loss %.6f over %d supervised tokens (perplexity %.3f), %d tokens, %d truncated, %.2f s",
                       result.loss, result.supervisedTokens, result.perplexity, result.tokens, result.truncatedExamples, result.seconds)))
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.sortedKeys]
            let json = String(decoding: try encoder.encode(result), as: UTF8.self)
            logger.info("\(json)")
        }
    }
}
