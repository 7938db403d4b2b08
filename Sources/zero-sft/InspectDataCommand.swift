import ArgumentParser
import Foundation
import ModelIO
import Models
import Tokenizers
import Training

#if canImport(Glibc)
import Glibc
#endif

/// `zero-sft inspect-data`: what `train` will see of a data file.
struct InspectDataCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "inspect-data",
        abstract: "Show how a data file is tokenized and masked: one example token by token, and dataset statistics.",
        discussion: """
            Each token of the shown example is marked trained (its label is its id) or not (-100). The \
            statistics say how many examples exceed --seq-len: train truncates them to --seq-len tokens \
            and skips those left without a trained token. With --jsonl every example is printed as \
            {"input_ids": [...], "labels": [...]}, the pre-tokenized form train reads.
            """)

    @Option(name: .long, help: ArgumentHelp(
        "The model whose tokenizer and chat template are used: an HF directory, a .gguf file, or a preset (pre-tokenized data only).",
        valueName: "model"))
    var model: String
    @Option(name: .long, help: "The data file (messages / prompt-completion / alpaca JSONL, alpaca JSON, or pre-tokenized JSONL).")
    var data: String
    @OptionGroup var text: TextDataOptions
    @Option(name: .long, help: "Tokens per packed training row: longer examples are handled by --long-examples.")
    var seqLen: Int = 512
    @OptionGroup var long: LongExampleOptions
    @Option(name: .long, help: "Which example to show, counted from 1.")
    var example: Int = 1
    @Flag(name: .long, help: "Print every example as {\"input_ids\": [...], \"labels\": [...]} on stdout (statistics go to stderr).")
    var jsonl = false

    func validate() throws {
        let tokens = TrainingOptions.maximumSequenceLength
        if !(2...tokens).contains(seqLen) { throw ValidationError("--seq-len must be in [2, \(tokens)] (got \(seqLen))") }
        if example < 1 { throw ValidationError("--example counts from 1 (got \(example))") }
    }

    func run() throws {
        // The tokenizer, when the model has one (a preset has none: pre-tokenized data is shown as ids).
        // A directory need hold only tokenizer files; its config.json, if any, is read once for the vocabulary size.
        let files = try modelFiles()
        let setup: TextSetup? = ModelPreset.config(named: model) != nil ? nil
            : try files.map { try TextSetup.directory($0, model: model) } ?? TextSetup.load(model: model)
        var encoderUsed: ChatEncoder?
        var options = text.options
        options.sequenceLength = seqLen
        options.longExamples = long.longExamples
        let vocabulary = try vocabularySize(setup, files: files)
        if PreparedFile.isPrepared(path: data) { try TextDataOptions.checkPrepared(data, long: (seqLen, long.longExamples)) }
        let loaded = PreparedFile.isPrepared(path: data)
            ? try text.openPrepared(data, fingerprint: {
                guard let setup else { throw ValidationError("--model \(model) has no tokenizer to check the prepared file's against") }
                let encoder = try setup.encoder(template: text.chatTemplate)
                encoderUsed = encoder
                return DataFingerprint(encoder: encoder, tokenizerFingerprint: setup.fingerprint, trainOn: text.trainOn)
            }, vocabularySize: vocabulary).loadedData()
            : try ChatDataset.load(from: URL(fileURLWithPath: data), vocabularySize: vocabulary, options: options) {
            // A preset has no tokenizer: TextSetup.encoder says so.
            let encoder = try setup?.encoder(template: text.chatTemplate) ?? TextSetup.load(model: model).encoder(template: text.chatTemplate)
            encoderUsed = encoder
            return encoder
        }
        let statistics = DataStatistics(loaded, sequenceLength: seqLen)
        if jsonl {
            var output = ""
            for example in loaded.examples {
                output += TokenizedDataset.jsonLine(example)
                output += "\n"
                if output.utf8.count > 1 << 20 {
                    FileHandle.standardOutput.write(Data(output.utf8))
                    output = ""
                }
            }
            FileHandle.standardOutput.write(Data(output.utf8))
            FileHandle.standardError.write(Data((statistics.lines(loaded.report).joined(separator: "\n") + "\n").utf8))
            return try statistics.checkTrainable()
        }

        var lines: [String] = []
        if let setup { lines.append("tokenizer: \(setup.origin)") }
        if let encoderUsed { lines.append("chat template: \(encoderUsed.template)") }
        guard example <= loaded.examples.count else {
            throw ValidationError("--example \(example): the file gives \(loaded.examples.count) example(s)")
        }
        let shown = loaded.examples[example - 1]
        let unit = loaded.report.numberedByLine ? "line" : "record"
        lines.append("")
        lines.append("example \(example) of \(loaded.examples.count) (\(unit) \(loaded.recordNumbers[example - 1])): "
                     + "\(shown.count) tokens, \(shown.labels.filter { $0 != -100 }.count) trained")
        lines += tokenTable(shown, tokenizer: setup?.tokenizer)
        if let tokenizer = setup?.tokenizer {
            lines.append("")
            lines.append("text (trained parts \(isatty(1) != 0 ? "in green" : "between ⟦ and ⟧")):")
            lines.append(markedText(shown, tokenizer: tokenizer))
        }
        lines.append("")
        lines += statistics.lines(loaded.report)
        print(lines.joined(separator: "\n"))
        try statistics.checkTrainable()
    }

    /// The files of `--model` when it is a directory (each read once), else nil.
    func modelFiles() throws -> ModelFiles? {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: model, isDirectory: &isDirectory), isDirectory.boolValue else { return nil }
        return try ModelFiles(directory: URL(fileURLWithPath: model))
    }

    /// The model's vocabulary size: a preset's, else the larger of the tokenizer's and config.json's.
    func vocabularySize(_ setup: TextSetup?, files: ModelFiles?) throws -> Int {
        if let preset = ModelPreset.config(named: model) { return preset.vocabSize }
        var size = setup?.tokenizer.vocabularySize ?? 0
        if let files, let data = try files.data("config.json") {
            size = max(size, try ModelSource.decodeConfig(data, path: files.url("config.json").path).vocabSize)
        }
        return size > 0 ? size : Int.max
    }

    /// One line per token: position, id, whether it is trained, and its text.
    func tokenTable(_ example: SFTExample, tokenizer: Tokenizer?) -> [String] {
        var lines = ["  position        id  trained  token"]
        for (position, (id, label)) in zip(example.inputIDs, example.labels).enumerated() {
            let trained = label == -100 ? "" : (position == 0 ? "(first)" : "yes")
            var line = pad(String(position), 10) + pad(String(id), 10) + "  " + trained.padding(toLength: 7, withPad: " ", startingAt: 0)
            if let tokenizer { line += "  " + Self.quoted(tokenText(Int(id), tokenizer)) }
            lines.append(line)
        }
        return lines
    }

    func pad(_ text: String, _ width: Int) -> String {
        String(repeating: " ", count: max(0, width - text.count)) + text
    }

    /// The decoded text of one token, or its byte-level form when it is a partial UTF-8 sequence.
    func tokenText(_ id: Int, _ tokenizer: Tokenizer) -> String {
        let decoded = tokenizer.decode([id])
        return decoded.contains("\u{FFFD}") ? (tokenizer.token(of: id) ?? decoded) : decoded
    }

    /// The example's text with trained runs in green (terminal) or between ⟦ ⟧.
    func markedText(_ example: SFTExample, tokenizer: Tokenizer) -> String {
        let colour = isatty(1) != 0
        let (open, close) = colour ? ("\u{1B}[32m", "\u{1B}[0m") : ("⟦", "⟧")
        var output = ""
        var run: [Int] = []
        var runTrained = false
        func flush() {
            if run.isEmpty { return }
            let text = tokenizer.decode(run)
            output += runTrained ? open + text + close : text
            run = []
        }
        for (id, label) in zip(example.inputIDs, example.labels) {
            let trained = label != -100
            if trained != runTrained { flush(); runTrained = trained }
            run.append(Int(id))
        }
        flush()
        return output
    }

    static func quoted(_ text: String) -> String {
        var result = "\""
        for scalar in text.unicodeScalars {
            switch scalar {
            case "\n": result += "\\n"
            case "\t": result += "\\t"
            case "\r": result += "\\r"
            case "\"": result += "\\\""
            case "\\": result += "\\\\"
            default:
                if scalar.value < 0x20 || scalar.value == 0x7F { result += "\\u{\(String(scalar.value, radix: 16))}" } else { result.unicodeScalars.append(scalar) }
            }
        }
        return result + "\""
    }
}

/// Dataset statistics as train will see them: truncation to the sequence length as TrainingPlan does it.
struct DataStatistics {
    var examples = 0
    var tokens = 0
    var supervised = 0
    var longest = 0
    var longestRecord = 0
    var sequenceLength: Int
    var overLength = 0
    /// Trained tokens cut off by truncation.
    var supervisedLost = 0
    /// Examples left without a trained token by truncation (train skips them).
    var emptiedByTruncation = 0

    /// How each ``PackingMethod`` fills rows of `sequenceLength` (one epoch, train's default seed).
    var packingLines: [String] = []

    init(_ loaded: LoadedData, sequenceLength: Int) {
        self.sequenceLength = sequenceLength
        for method in PackingMethod.allCases {
            let plan = TrainingPlan(examples: loaded.examples, sequenceLength: sequenceLength, microBatchSize: 1, gradientAccumulation: 1,
                                    ranks: 1, seed: TrainingOptions().seed, packing: method)
            guard !plan.kept.isEmpty else { break }
            packingLines.append("packing \(method.rawValue)\(method == .bfd ? " (default)" : ""): \(plan.report.rowsPerEpoch) rows of \(sequenceLength), "
                                + String(format: "%.1f%% filled, ", plan.report.fill * 100) + "\(plan.report.paddingTokens) padding tokens")
        }
        for (example, record) in zip(loaded.examples, loaded.recordNumbers) {
            examples += 1
            tokens += example.count
            supervised += example.supervisedCount
            if example.count > longest { longest = example.count; longestRecord = record }
            if example.count > sequenceLength {
                overLength += 1
                let kept = SFTExample(inputIDs: Array(example.inputIDs.prefix(sequenceLength)), labels: Array(example.labels.prefix(sequenceLength)))
                supervisedLost += example.supervisedCount - kept.supervisedCount
                if kept.supervisedCount == 0 { emptiedByTruncation += 1 }
            }
        }
    }

    /// Throws (after the statistics are printed) when truncation leaves no supervised token: train and
    /// eval refuse such data, so a zero exit would report an empty dataset as usable.
    func checkTrainable() throws {
        guard supervised - supervisedLost > 0 else {
            throw ValidationError("no supervised token within --seq-len \(sequenceLength) in \(examples) example(s): "
                                  + "train and eval refuse this data")
        }
    }

    func lines(_ report: DataLoadReport) -> [String] {
        let unit = report.numberedByLine ? "line" : "record"
        var lines = ["data: \(report.summary)"]
        lines += packingLines
        lines.append("examples: \(examples)")
        lines.append("tokens: \(tokens) (mean \(examples > 0 ? String(format: "%.1f", Double(tokens) / Double(examples)) : "0") per example)")
        lines.append("supervised tokens: \(supervised) (\(tokens > 0 ? String(format: "%.1f", 100 * Double(supervised) / Double(tokens)) : "0")% of tokens)")
        lines.append("longest example: \(longest) tokens (\(unit) \(longestRecord))")
        if overLength == 0 {
            lines.append("longer than --seq-len \(sequenceLength): none")
        } else {
            var line = "longer than --seq-len \(sequenceLength): \(overLength); train truncates them to \(sequenceLength) tokens, "
                + "losing \(supervisedLost) supervised token\(supervisedLost == 1 ? "" : "s")"
            if emptiedByTruncation > 0 { line += "; \(emptiedByTruncation) keep no supervised token and are skipped" }
            lines.append(line)
        }
        return lines
    }
}
