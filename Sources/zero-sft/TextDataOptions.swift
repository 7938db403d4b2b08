import ArgumentParser
import Foundation
import ModelIO
import Models
import Training

extension TrainOn: ExpressibleByArgument {}

/// How text data becomes examples: the chat template, which tokens are trained, and strictness.
/// Shared by `train`, `inspect-data` and `eval`.
struct TextDataOptions: ParsableArguments {
    @Option(name: .long, help: ArgumentHelp(
        "Chat template: \(ChatTemplate.all.map(\.name).joined(separator: ", ")) (default: the model's own, recognised).",
        valueName: "name"))
    var chatTemplate: ChatTemplate?

    @Option(name: .long, help: ArgumentHelp(
        "Trained tokens of text data: assistant (every assistant turn and its end-of-turn token), last (the last assistant turn only), all (the prompt too).",
        valueName: "assistant|last|all"))
    var trainOn: TrainOn = .assistant

    @Flag(name: .long, help: "A conversation with no trained token is an error (default: skipped and counted).")
    var strict = false

    var options: ChatDataOptions { ChatDataOptions(trainOn: trainOn, strict: strict) }

    /// Loads `data` for the resolved model: pre-tokenized JSONL as is, text formats with the model's tokenizer
    /// and chat template (loaded only when the file holds text, from files the resolution already found).
    /// With `long`, examples longer than its sequence length are handled by its policy.
    func load(data: String, source: ModelSource, vocabularySize: Int, long: (sequenceLength: Int, policy: LongExamplePolicy)? = nil) throws -> LoadedData {
        var options = options
        options.sequenceLength = long?.sequenceLength
        if let long { options.longExamples = long.policy }
        return try ChatDataset.load(from: URL(fileURLWithPath: data), vocabularySize: vocabularySize, options: options) {
            try source.textSetup().encoder(template: chatTemplate)
        }
    }
}

/// `--long-examples`: what `train` (and `inspect-data`'s report) does with examples longer than `--seq-len`.
struct LongExampleOptions: ParsableArguments {
    @Option(name: .long, help: ArgumentHelp(
        "Examples longer than --seq-len: truncate (keep the first --seq-len tokens), split (cut a conversation at turn boundaries into examples that fit, each with the system prompt and as much earlier context as fits; text data only), drop, or error. Each is counted, the first such record named.",
        valueName: "truncate|split|drop|error"))
    var longExamples: LongExamplePolicy = .truncate
}
