import Foundation
import TestSupport
import Testing
import Training

/// The edges as a user meets them through the built binary (part of the serialized `CommandTests`).
extension CommandTests {
    /// `eval` on data with no supervised token exited 0 printing loss 0 and perplexity 1; now an error before
    /// any rank starts (both ways to get there: all labels -100, every label past --seq-len).
    @Test func evalRefusesAnEmptyMeasurement() throws {
        let scratch = try Scratch()
        let masked = try scratch.file("masked.jsonl", #"{"input_ids": [1, 2, 3, 4], "labels": [-100, -100, -100, -100]}"# + "\n")
        let late = try scratch.file("late.jsonl", #"{"input_ids": [1, 2, 3, 4, 5], "labels": [-100, -100, -100, 4, 5]}"# + "\n")
        for (url, options, message) in [
            (masked, [String](), "no supervised token in 1 example (every label is -100)"),
            (late, ["--seq-len", "3"], "within the first 3 tokens (1 have supervised tokens only past --seq-len 3: raise it)"),
        ] {
            let result = try Self.run(["eval", "--model", "tiny", "--data", url.path] + options)
            #expect(result.status != 0 && result.stderr.contains(message), "status \(result.status): \(result.stdout) \(result.stderr)")
            #expect(!result.stdout.contains("\"perplexity\":1"), "\(result.stdout)")
        }
        let ok = try Self.run(["eval", "--model", "tiny", "--data", late.path, "--seq-len", "4"])
        #expect(ok.status == 0 && ok.stdout.contains("\"supervised_tokens\":1"), "\(ok.stdout) \(ok.stderr)")
    }

    /// `inspect-data` prints its statistics and then fails when truncation leaves nothing to train on.
    @Test func inspectDataRefusesDataTruncatedToNothing() throws {
        let scratch = try Scratch()
        let late = try scratch.file("late.jsonl", #"{"input_ids": [1, 2, 3, 4, 5], "labels": [-100, -100, -100, 4, 5]}"# + "\n")
        let result = try Self.run(["inspect-data", "--model", "tiny", "--data", late.path, "--seq-len", "3"])
        #expect(result.status != 0 && result.stdout.contains("1 keep no supervised token"), "\(result.stdout)")
        #expect(result.stderr.contains("no supervised token within --seq-len 3 in 1 example(s): train and eval refuse this data"), "\(result.stderr)")
        let empty = try scratch.file("empty.txt", "")
        let bench = try Self.run(["tokenize", "--model", Self.smolLM2, "--bench", empty.path, "--seconds", "0.1"])
        #expect(bench.status != 0 && bench.stderr.contains("empty.txt: is empty: there is nothing to measure"), "\(bench.stdout) \(bench.stderr)")
    }

    /// `tokenize` keeps a leading BOM and CR/LF bytes (HF: [186, 136, 140, 19556] for "\u{FEFF}Hello"; it
    /// gave [19556]), and refuses invalid UTF-8 with its offset.
    @Test func tokenizeKeepsEveryByte() throws {
        let goldens: [(String, String)] = [
            ("\u{FEFF}Hello", "[186, 136, 140, 19556]\n"),
            ("a\r\nb\r\n", "[81, 201, 198, 82, 2738]\n"),
        ]
        for (text, ids) in goldens {
            let result = try Self.run(["tokenize", "--model", Self.smolLM2], input: text)
            #expect(result.status == 0 && result.stdout == ids, "\(text.debugDescription): \(result.stdout) \(result.stderr)")
        }
        let scratch = try Scratch()
        let bad = scratch.url.appendingPathComponent("bad.txt")
        try Data([0x61, 0x0A, 0x62, 0xFF, 0x63]).write(to: bad)
        let result = try Self.run(["tokenize", "--model", Self.smolLM2, "--file", bad.path])
        #expect(result.status != 0 && result.stderr.contains("\(bad.path):2: invalid UTF-8 at byte offset 3 (0xFF)"), "\(result.stderr)")
        let missing = try Self.run(["tokenize", "--model", Self.smolLM2, "--file", scratch.url.appendingPathComponent("absent.txt").path])
        #expect(missing.status != 0 && missing.stderr.contains("absent.txt: cannot read: open failed: No such file or directory"),
                "\(missing.stderr)")
        #expect(!missing.stderr.contains("NSCocoaErrorDomain") && !missing.stderr.contains("could not be completed"))
    }

    /// Every numeric option given a negative value reaches its own range check, which names it (it was
    /// "Missing value for '--lr <lr>'": swift-argument-parser reads `-1` as a flag). The options come from
    /// the binary's own `--experimental-dump-help`, so an option added later is covered too.
    @Test func negativeNumericOptionsGetTheirRangeMessage() throws {
        let options = try ZeroSFTBinary.numericOptions(inHelpDump: Self.run(["--experimental-dump-help"]).stdout)
        let scratch = try Scratch()
        let data = try scratch.file("ok.jsonl", #"{"input_ids": [1, 2, 3, 4], "labels": [1, 2, 3, 4]}"# + "\n")
        let required: [String: [String]] = [
            "train": ["--data", data.path], "eval": ["--data", data.path], "generate": ["--prompt", "x"],
            "export": ["--out", scratch.url.appendingPathComponent("out").path], "tokenize": ["--model", "tiny"],
            "inspect-data": ["--model", "tiny", "--data", data.path],
        ]
        var checked = 0
        for (name, option) in options {
            for value in ["-1", "-0.5"] {
                let result = try Self.run([name] + (required[name] ?? []) + ["--\(option)", value])
                #expect(result.status != 0, "\(name) --\(option) \(value) was accepted: \(result.stdout.suffix(300))")
                #expect(result.stderr.contains("--\(option)") && !result.stderr.contains("Missing value"),
                        "\(name) --\(option) \(value): \(result.stderr)")
                checked += 1
            }
        }
        #expect(checked >= 80, "only \(checked) option checks: did --experimental-dump-help change?")
        // The joined spelling still parses a valid negative-looking value as a value, and `--` is respected.
        let lr = try Self.run(["train", "--data", data.path, "--lr", "-1e-3"])
        #expect(lr.stderr.contains("--lr must be a positive number (got -0.001)"), "\(lr.stderr)")
    }

    /// Files that cannot be written name the path, the operation and the system's reason (export printed
    /// `Error Domain=NSCocoaErrorDomain Code=4 "The file doesn’t exist." UserInfo={…}`).
    @Test func unwritablePathsNameTheOperation() throws {
        let export = try Self.run(["export", "--model", "tiny", "--out", "/proc/zero-sft-export"])
        #expect(export.status != 0 && export.stderr.contains("/proc/zero-sft-export: create directory failed: No such file or directory (errno 2)"),
                "\(export.stderr)")
        let scratch = try Scratch()
        let data = try scratch.file("ok.jsonl", #"{"input_ids": [1, 2, 3, 4], "labels": [1, 2, 3, 4]}"# + "\n")
        let train = try Self.run(["train", "--data", data.path, "--max-steps", "1", "--metrics-file", "/proc/zero-sft-absent/m.jsonl"])
        #expect(train.status != 0 && train.stderr.contains("/proc/zero-sft-absent/m.jsonl: create the metrics file failed: No such file or directory"),
                "\(train.stderr)")
        for result in [export, train] { #expect(!result.stderr.contains("NSCocoaErrorDomain")) }
    }

    /// Runs `script` with /bin/sh, `$0` being the zero-sft binary (for bytes a Swift String cannot hold).
    static func shell(_ script: String) throws -> (status: Int32, stdout: String, stderr: String) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/bin/sh")
        process.arguments = ["-c", script, try ZeroSFTBinary.locate().path]
        let scratch = try Scratch()
        let errorURL = scratch.url.appendingPathComponent("stderr")
        _ = FileManager.default.createFile(atPath: errorURL.path, contents: nil)
        let errorHandle = try FileHandle(forWritingTo: errorURL)
        let stdout = Pipe()
        process.standardOutput = stdout
        process.standardError = errorHandle
        try process.run()
        let outputData = stdout.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        try errorHandle.close()
        return (process.terminationStatus, String(decoding: outputData, as: UTF8.self), String(decoding: try Data(contentsOf: errorURL), as: UTF8.self))
    }

    /// An argument or a chat line that is not UTF-8 is reported with its offset (Swift's CommandLine.arguments
    /// and readLine() replaced the bytes with U+FFFD and went on).
    @Test func invalidUTF8ArgumentsAndChatLinesAreReported() throws {
        let argument = try Self.shell(#""$0" tokenize --model "$(printf 'ab\377')""#)
        #expect(argument.status != 0 && argument.stderr.contains("argument 3: invalid UTF-8 at byte offset 2 (0xFF)"), "\(argument.stderr)")
        let model = ChatFixtures.smolLM2GGUF.path
        guard FileManager.default.fileExists(atPath: model) else { return }
        let chat = try Self.shell(#"printf 'caf\351\r\n/exit\n' | "$0" chat --model "\#(model)" --max-new-tokens 4"#)
        #expect(chat.status == 0 && chat.stderr.contains("standard input line 1: invalid UTF-8 at byte offset 3 (0xE9)"), "\(chat.stderr)")
    }

    /// train's default --lr is TRL's SFT default 2e-5 (it was 3e-4, a pretraining rate).
    @Test func trainHelpShowsTheSFTLearningRate() throws {
        let help = try Self.run(["train", "--help"])
        #expect(help.stdout.contains("(default: 2e-05)"), "\(help.stdout)")
    }
}
