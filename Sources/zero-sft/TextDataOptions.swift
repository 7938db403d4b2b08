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
    func load(data: String, source: ModelSource, vocabularySize: Int) throws -> LoadedData {
        try ChatDataset.load(from: URL(fileURLWithPath: data), vocabularySize: vocabularySize, options: options) {
            try source.textSetup().encoder(template: chatTemplate)
        }
    }
}
