import ArgumentParser
import Checkpoints
import Foundation
import ModelIO
import Training

#if canImport(Glibc)
import Glibc
#endif

/// `zero-sft prepare`: tokenize a data file once into a token file every rank memory-maps.
struct PrepareCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "prepare",
        abstract: "Tokenize a data file once into a prepared token file that train, eval and inspect-data memory-map.",
        discussion: """
            The file (docs/formats.md) holds the token ids in the narrowest width the vocabulary allows, the \
            label mask, an offsets index, and the hashes of the tokenizer, the chat template and --train-on: a run \
            with other ones refuses it, naming both hashes. It is written to a temporary file, synced and renamed, \
            so a reader never sees half of it. Every rank of a run maps it: the host's page cache holds one copy \
            whatever the rank count. Progress goes to stderr (a bar on a terminal, a line every 10 s otherwise).
            """)

    @OptionGroup var modelOptions: ModelOptions
    @Option(name: .long, help: "The data file: messages / prompt-completion / alpaca JSONL, alpaca JSON, or pre-tokenized JSONL.")
    var data: String
    @Option(name: .long, help: "The prepared token file to write (replaced atomically if it exists).")
    var out: String
    @OptionGroup var text: TextDataOptions
    @Flag(name: .long, help: "No progress output on stderr.")
    var quiet = false

    func validate() throws {
        let input = URL(fileURLWithPath: data).standardizedFileURL.path, output = URL(fileURLWithPath: out).standardizedFileURL.path
        if input == output { throw ValidationError("--out \(out) is the --data file: it would be replaced") }
    }

    func run() throws {
        let started = Date()
        let source = try modelOptions.resolve()
        let vocabularySize = source.config.vocabSize
        let url = URL(fileURLWithPath: data)
        let parsed = try ChatDataset.parse(from: url, vocabularySize: vocabularySize)
        let parseSeconds = Date().timeIntervalSince(started)
        let fileBytes = (try? FileManager.default.attributesOfItem(atPath: data)[.size] as? Int) ?? 0
        var progress = PrepareProgress(totalBytes: fileBytes, enabled: !quiet)
        let writer: PreparedFileWriter
        var metadata: [String: Any] = ["source": data, "prepared_by": "zero-sft prepare", "model": modelOptions.model]
        var report: DataLoadReport
        switch parsed {
        case .pretokenized(let loaded):
            let explicit = loaded.examples.contains { example in zip(example.inputIDs, example.labels).contains { $1 != -100 && $1 != $0 } }
            writer = try PreparedFileWriter(path: out, vocabularySize: vocabularySize, fingerprint: .pretokenized, explicitLabels: explicit)
            for (index, example) in loaded.examples.enumerated() {
                try writer.append(example, record: loaded.recordNumbers[index])
                progress.update(examples: index + 1, bytes: fileBytes * (index + 1) / loaded.examples.count, tokens: writer.tokens)
            }
            report = loaded.report
        case .text(let chat):
            let setup = try source.textSetup()
            let encoder = try setup.encoder(template: text.chatTemplate)
            let fingerprint = DataFingerprint(encoder: encoder, tokenizerFingerprint: setup.fingerprint, trainOn: text.trainOn)
            writer = try PreparedFileWriter(path: out, vocabularySize: vocabularySize, fingerprint: fingerprint)
            metadata["template"] = encoder.template.name
            metadata["train_on"] = text.trainOn.rawValue
            metadata["tokenizer"] = setup.origin
            metadata["tokenizer_sha256"] = setup.fingerprint
            var skipped: [Int] = []
            let chunk = 64
            for start in stride(from: 0, to: chat.conversations.count, by: chunk) {
                let range = start..<min(start + chunk, chat.conversations.count)
                let encoded = try chat.encode(range, encoder: encoder, options: text.options, vocabularySize: vocabularySize)
                for (example, number) in zip(encoded.examples, encoded.recordNumbers) { try writer.append(example, record: number) }
                skipped += encoded.skipped
                progress.update(examples: range.upperBound, bytes: chat.recordEnds[range.upperBound - 1], tokens: writer.tokens)
            }
            guard writer.examples > 0 else {
                throw DataError(path: data, line: nil, message: "no example has a supervised token (\(chat.conversations.count) records read)")
            }
            report = DataLoadReport(path: data, format: chat.format)
            report.records = chat.conversations.count
            report.skippedUnsupervised = skipped
            report.numberedByLine = chat.numberedByLine
        }
        metadata["format"] = report.format.rawValue
        metadata["records"] = report.records
        metadata["skipped_unsupervised"] = report.skippedUnsupervised
        metadata["numbered_by_line"] = report.numberedByLine
        try writer.finish(metadata: metadata)
        progress.finish()
        let seconds = Date().timeIntervalSince(started)
        let written = (try? FileManager.default.attributesOfItem(atPath: out)[.size] as? Int) ?? 0
        let width = fileBytes > 0 && vocabularySize <= 65536 ? "u16" : "u32"
        print(report.summary)
        print(String(format: "wrote %@: %d examples, %d tokens as %@, %@ (%.1f%% of the data file); %.2f s (parse %.2f s), %.2f MB/s of data, %.0f examples/s",
                     out, writer.examples, writer.tokens, width, MemoryLedger.format(written), 100 * Double(written) / Double(max(1, fileBytes)),
                     seconds, parseSeconds, Double(fileBytes) / 1e6 / seconds, Double(writer.examples) / seconds))
    }
}

/// Progress on stderr: a bar redrawn in place on a terminal (at most 10 times a second), or a plain line
/// every 10 s when stderr is a file or pipe (a log stays readable).
struct PrepareProgress {
    let totalBytes: Int
    let enabled: Bool
    let terminal = isatty(2) != 0
    let started = Date()
    var lastPrinted = Date.distantPast
    var lastLine = ""

    init(totalBytes: Int, enabled: Bool) {
        self.totalBytes = totalBytes
        self.enabled = enabled
    }

    mutating func update(examples: Int, bytes: Int, tokens: Int) {
        guard enabled else { return }
        let now = Date()
        guard now.timeIntervalSince(lastPrinted) >= (terminal ? 0.1 : 10) else { return }
        lastPrinted = now
        let seconds = max(1e-9, now.timeIntervalSince(started))
        let fraction = totalBytes > 0 ? min(1, Double(bytes) / Double(totalBytes)) : 0
        let eta = fraction > 0 ? seconds * (1 - fraction) / fraction : 0
        let rates = String(format: "%3.0f%% %d examples (%.0f/s), %d tokens, %.1f MB/s, ETA %.0f s",
                           100 * fraction, examples, Double(examples) / seconds, tokens, Double(bytes) / 1e6 / seconds, eta)
        if terminal {
            let width = 24, filled = Int(fraction * Double(width))
            lastLine = "\r[" + String(repeating: "#", count: filled) + String(repeating: " ", count: width - filled) + "] " + rates
            FileHandle.standardError.write(Data(lastLine.utf8))
        } else {
            FileHandle.standardError.write(Data(("prepare: " + rates + "\n").utf8))
        }
    }

    func finish() {
        guard enabled, terminal, !lastLine.isEmpty else { return }
        FileHandle.standardError.write(Data("\n".utf8))
    }
}
