import ArgumentParser
import Collectives
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

    /// The chat-data options with `long`'s sequence length and policy (nil: examples are kept whole and
    /// truncated when packed).
    func options(long: (sequenceLength: Int, policy: LongExamplePolicy)?) -> ChatDataOptions {
        var options = options
        options.sequenceLength = long?.sequenceLength
        if let long { options.longExamples = long.policy }
        return options
    }

    /// Loads `data` for the resolved model: a prepared token file (checked against this run, every example
    /// decoded), pre-tokenized JSONL as is, text formats with the model's tokenizer and chat template (loaded
    /// only when the file holds text, from files the resolution already found). With `long`, examples longer
    /// than its sequence length are handled by its policy.
    func load(data: String, source: ModelSource, vocabularySize: Int, long: (sequenceLength: Int, policy: LongExamplePolicy)? = nil) throws -> LoadedData {
        try Self.checkRegularFile(data)
        let options = options(long: long)
        if PreparedFile.isPrepared(path: data) {
            try Self.checkPrepared(data, long: long)
            return try openPrepared(data, fingerprint: { try fingerprint(setup: source.textSetup()) }, vocabularySize: vocabularySize).loadedData()
        }
        return try ChatDataset.load(from: URL(fileURLWithPath: data), vocabularySize: vocabularySize, options: options) {
            try source.textSetup().encoder(template: chatTemplate)
        }
    }

    /// Refuses a pipe, FIFO or device as data (`--data <(zcat d.jsonl.gz)`, `/dev/stdin`): the file is opened more
    /// than once (the prepared-file magic, the records, and by every rank), so a pipe lost its first bytes and
    /// the error was "malformed JSON" at line 1. A missing path is left to the reader's own error.
    static func checkRegularFile(_ path: String) throws {
        var info = stat()
        guard stat(path, &info) == 0 else { return }
        let kind = info.st_mode & S_IFMT
        guard kind != S_IFREG, kind != S_IFDIR else { return }
        throw DataError(path: path, line: nil, message: "not a regular file (a pipe, FIFO or device): data is read more than once "
                        + "(and by every rank); write it to a file first (e.g. zcat data.jsonl.gz > data.jsonl)")
    }

    /// The fingerprint this run gives text data: the tokenizer's, the chosen template's and `--train-on`.
    func fingerprint(setup: TextSetup) throws -> DataFingerprint {
        DataFingerprint(encoder: try setup.encoder(template: chatTemplate), tokenizerFingerprint: setup.fingerprint, trainOn: trainOn)
    }

    /// A prepared file holds whole examples, cut only when packed: `--long-examples` other than `truncate`
    /// (which needs turn boundaries or drops and refuses by record) is refused for it, before any rank starts.
    static func checkPrepared(_ path: String, long: (sequenceLength: Int, policy: LongExamplePolicy)?) throws {
        guard let long, long.policy != .truncate else { return }
        throw DataError(path: path, line: nil, message: "a prepared token file holds whole examples, truncated to --seq-len when "
                        + "packed; --long-examples \(long.policy.rawValue) applies to JSONL data only (give the JSONL, or --long-examples truncate)")
    }

    /// Maps a prepared file and refuses it when it was made with another tokenizer, template or `--train-on`
    /// (`fingerprint` is asked only for a file prepared from text). Before any rank starts.
    func openPrepared(_ path: String, fingerprint: () throws -> DataFingerprint, vocabularySize: Int) throws -> PreparedFile {
        let file = try PreparedFile(path: path)
        try file.check(against: file.fingerprint.isPretokenized ? nil : fingerprint(), modelVocabularySize: vocabularySize)
        return file
    }

    /// `--data` resolved before any rank starts: every error a record can have is found here, except
    /// those only tokenizing shows (an id past the model's vocabulary, `--strict`), which ``examples(_:communicator:)``
    /// agrees on across ranks.
    func resolve(data: String, source: ModelSource, vocabularySize: Int,
                 long: (sequenceLength: Int, policy: LongExamplePolicy)? = nil) throws -> ResolvedData {
        try Self.checkRegularFile(data)
        if PreparedFile.isPrepared(path: data) {
            try Self.checkPrepared(data, long: long)
            return .prepared(try openPrepared(data, fingerprint: { try fingerprint(setup: source.textSetup()) }, vocabularySize: vocabularySize))
        }
        let url = URL(fileURLWithPath: data)
        switch try ChatDataset.parse(from: url, vocabularySize: vocabularySize) {
        case .pretokenized(let loaded):
            guard long != nil else { return .loaded(loaded) }
            // The long-example policy needs the options: pre-tokenized files are read again with them (cheap).
            return .loaded(try ChatDataset.load(from: url, vocabularySize: vocabularySize, options: options(long: long)) {
                throw DataError(path: data, line: nil, message: "pre-tokenized data needs no encoder")
            })
        case .text(let parsed): return .text(parsed, try source.textSetup().encoder(template: chatTemplate), vocabularySize, long)
        }
    }

    /// The examples of resolved data on this rank: a mapped file as is; text tokenized in slices across the
    /// ranks and gathered (``Training/ParsedChatData/encodeSharded(encoder:options:vocabularySize:communicator:)``).
    func examples(_ data: ResolvedData, communicator: Communicator) throws -> (source: any ExampleSource, report: DataLoadReport) {
        switch data {
        case .prepared(let file): return (file, file.report)
        case .loaded(let loaded): return (loaded.examples, loaded.report)
        case .text(let parsed, let encoder, let vocabularySize, let long):
            let loaded = try parsed.encodeSharded(encoder: encoder, options: options(long: long), vocabularySize: vocabularySize,
                                                  communicator: communicator)
            return (loaded.examples, loaded.report)
        }
    }
}

/// A `--data` file checked before any rank starts (``TextDataOptions/resolve(data:source:vocabularySize:)``).
enum ResolvedData {
    /// A prepared token file, mapped and checked against the run.
    case prepared(PreparedFile)
    /// Pre-tokenized JSONL, loaded.
    case loaded(LoadedData)
    /// Text records parsed and validated, to tokenize across the ranks (the vocabulary size, `--long-examples`).
    case text(ParsedChatData, ChatEncoder, Int, (sequenceLength: Int, policy: LongExamplePolicy)?)

    var isPrepared: Bool {
        if case .prepared = self { return true }
        return false
    }
}

/// `--long-examples`: what `train` (and `inspect-data`'s report) does with examples longer than `--seq-len`.
struct LongExampleOptions: ParsableArguments {
    @Option(name: .long, help: ArgumentHelp(
        "Examples longer than --seq-len: truncate (keep the first --seq-len tokens), split (cut a conversation at turn boundaries into examples that fit, each with the system prompt and as much earlier context as fits; text data only), drop, or error. Each is counted, the first such record named.",
        valueName: "truncate|split|drop|error"))
    var longExamples: LongExamplePolicy = .truncate
}
