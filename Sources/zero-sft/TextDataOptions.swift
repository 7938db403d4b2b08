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
    var chatTemplate: String?

    @Option(name: .long, help: ArgumentHelp(
        "Trained tokens of text data: assistant (every assistant turn and its end-of-turn token), last (the last assistant turn only), all (the prompt too).",
        valueName: "assistant|last|all"))
    var trainOn: TrainOn = .assistant

    @Flag(name: .long, help: "A conversation with no trained token is an error (default: skipped and counted).")
    var strict = false

    func validate() throws {
        if let chatTemplate, (try? ChatTemplate.named(chatTemplate)) == nil {
            throw ValidationError("--chat-template must be one of \(ChatTemplate.all.map(\.name).joined(separator: ", ")) (got \(chatTemplate))")
        }
    }

    var options: ChatDataOptions { ChatDataOptions(trainOn: trainOn, strict: strict) }

    /// Loads `data` for the resolved model: pre-tokenized JSONL as is, text formats with the model's tokenizer
    /// and chat template (loaded only when the file holds text, from files the resolution already found).
    func load(data: String, source: ModelSource, vocabularySize: Int) throws -> LoadedData {
        try ChatDataset.load(from: URL(fileURLWithPath: data), vocabularySize: vocabularySize, options: options) {
            try source.textSetup().encoder(chatTemplate: chatTemplate)
        }
    }
}
