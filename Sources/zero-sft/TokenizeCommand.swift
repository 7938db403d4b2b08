import ArgumentParser
import Checkpoints
import Foundation
import ModelIO
import Tokenizers
import Training

#if canImport(Glibc)
import Glibc
#endif

/// `zero-sft tokenize`: text to ids and back with a model's tokenizer, and the tokenizer's speed.
struct TokenizeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "tokenize",
        abstract: "Encode text from stdin to a JSON array of token ids (--decode: the reverse), or measure encoding speed (--bench).",
        discussion: """
            The text is taken byte for byte (a trailing newline from echo is a token too: use printf or echo -n). \
            Special tokens written in the text (e.g. <|im_end|>) become their ids, as in HF tokenizers.
            """)

    @Option(name: .long, help: ArgumentHelp("An HF directory (tokenizer.json, or vocab.json + merges.txt) or a .gguf file.", valueName: "model"))
    var model: String
    @Flag(name: .long, help: "Read a JSON array of ids (or ids separated by spaces/commas) and print their text.")
    var decode = false
    @Flag(name: .long, help: "Encode without the tokenizer's added special tokens (e.g. Llama 3's BOS); HF's add_special_tokens=False.")
    var noSpecialTokens = false
    @Flag(name: .long, help: "With --decode: leave special tokens out of the text.")
    var skipSpecialTokens = false
    @Option(name: .long, help: "Read this file instead of stdin.")
    var file: String?
    @Option(name: .long, help: ArgumentHelp("Measure encoding speed on this text file and print MB/s.", valueName: "file"))
    var bench: String?
    @Option(name: .long, help: "With --bench: seconds of repeated encoding after the first pass.")
    var seconds: Double = 3

    func validate() throws {
        if bench != nil && (decode || file != nil) { throw ValidationError("--bench measures encoding of its own file: drop --decode and --file") }
        if !(seconds > 0 && seconds.isFinite) { throw ValidationError("--seconds must be a positive number (got \(seconds))") }
    }

    func run() throws {
        let started = Date()
        let setup = try TextSetup.load(model: model)
        let loadSeconds = Date().timeIntervalSince(started)
        if let bench { return try benchmark(setup.tokenizer, path: bench, loadSeconds: loadSeconds) }

        let input = try file.map { path throws(FileReadError) in try FileContents.read(path) }
            ?? [UInt8](FileHandle.standardInput.readDataToEndOfFile())
        if decode {
            let ids = try Self.parseIDs(TextBytes.decode(input, source: file ?? "standard input"), vocabularySize: setup.tokenizer.vocabularySize)
            FileHandle.standardOutput.write(Data(setup.tokenizer.decode(ids, skipSpecialTokens: skipSpecialTokens).utf8))
        } else {
            // Every byte is kept (a leading BOM too, as HF tokenizers encodes Python's str); invalid UTF-8 is an error.
            let text = try TextBytes.decode(input, source: file ?? "standard input")
            let ids = setup.tokenizer.encode(text, addSpecialTokens: !noSpecialTokens)
            print("[" + ids.map(String.init).joined(separator: ", ") + "]")
        }
    }

    /// Ids from a JSON array or a list of integers separated by spaces, commas or newlines.
    static func parseIDs(_ input: String, vocabularySize: Int) throws -> [Int] {
        let text = input.trimmingCharacters(in: .whitespacesAndNewlines)
        let body = text.hasPrefix("[") && text.hasSuffix("]") ? String(text.dropFirst().dropLast()) : text
        var ids: [Int] = []
        for (index, field) in body.split(whereSeparator: { $0 == "," || $0 == " " || $0 == "\n" || $0 == "\t" || $0 == "\r" }).enumerated() {
            guard let id = Int(field) else { throw TokenizeError("id \(index + 1) is \"\(field)\": expected an integer") }
            guard id >= 0 && id < vocabularySize else {
                throw TokenizeError("id \(index + 1) is \(id): outside the vocabulary (0..<\(vocabularySize))")
            }
            ids.append(id)
        }
        return ids
    }

    /// Encodes the file once (cold word cache), then repeatedly for `seconds`, and prints MB/s by wall
    /// clock and by process CPU time (the machine may be shared), then one JSON line.
    func benchmark(_ tokenizer: Tokenizer, path: String, loadSeconds: Double) throws {
        let data = try FileContents.read(path)
        let text = try TextBytes.decode(data, source: path)
        // A rate over zero bytes is not a measurement.
        guard !data.isEmpty else { throw TokenizeError("\(path): is empty: there is nothing to measure") }
        let megabytes = Double(data.count) / 1e6
        func cpuSeconds() -> Double {
            var time = timespec()
            clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &time)
            return Double(time.tv_sec) + Double(time.tv_nsec) * 1e-9
        }
        var wall = Date(), cpu = cpuSeconds()
        let tokens = tokenizer.encode(text).count
        let firstWall = Date().timeIntervalSince(wall), firstCPU = cpuSeconds() - cpu

        var passes = 0
        wall = Date(); cpu = cpuSeconds()
        repeat {
            _ = tokenizer.encode(text)
            passes += 1
        } while Date().timeIntervalSince(wall) < seconds
        let repeatWall = Date().timeIntervalSince(wall), repeatCPU = cpuSeconds() - cpu

        func rate(_ mb: Double, _ s: Double) -> String { String(format: "%.2f", mb / max(s, 1e-9)) }
        print("tokenizer: \(model) loaded in \(String(format: "%.2f", loadSeconds)) s")
        print("text: \(path), \(String(format: "%.2f", megabytes)) MB, \(tokens) tokens (\(String(format: "%.2f", Double(data.count) / Double(max(tokens, 1)))) bytes per token)")
        print("encode, first pass: \(rate(megabytes, firstWall)) MB/s wall, \(rate(megabytes, firstCPU)) MB/s CPU")
        print("encode, \(passes) more passes: \(rate(megabytes * Double(passes), repeatWall)) MB/s wall, \(rate(megabytes * Double(passes), repeatCPU)) MB/s CPU")
        print("{\"bytes\": \(data.count), \"tokens\": \(tokens), \"load_seconds\": \(String(format: "%.3f", loadSeconds)), "
              + "\"first_pass_mb_per_s\": \(rate(megabytes, firstWall)), \"encode_mb_per_s\": \(rate(megabytes * Double(passes), repeatWall)), "
              + "\"encode_cpu_mb_per_s\": \(rate(megabytes * Double(passes), repeatCPU))}")
    }
}

/// Bad input to `tokenize`.
struct TokenizeError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}
