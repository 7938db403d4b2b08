import Foundation
import TestSupport
import Testing
import Training

/// The `tokenize`, `inspect-data` and `train --data` commands as a user runs them (the built zero-sft binary).
@Suite(.serialized) struct CommandTests {
    /// Runs zero-sft with `input` on stdin.
    static func run(_ arguments: [String], input: String = "") throws -> (status: Int32, stdout: String, stderr: String) {
        try TestProcesses.serially { try runAlone(arguments, input: input) }
    }

    private static func runAlone(_ arguments: [String], input: String) throws -> (status: Int32, stdout: String, stderr: String) {
        let process = Process()
        process.executableURL = try ZeroSFTBinary.locate()
        process.arguments = arguments
        // stderr goes to a file, stdout through a pipe read to the end: neither can block the child.
        let scratch = try Scratch()
        let errorURL = scratch.url.appendingPathComponent("stderr")
        _ = FileManager.default.createFile(atPath: errorURL.path, contents: nil)
        let errorHandle = try FileHandle(forWritingTo: errorURL)
        let stdin = Pipe(), stdout = Pipe()
        process.standardInput = stdin
        process.standardOutput = stdout
        process.standardError = errorHandle
        try process.run()
        stdin.fileHandleForWriting.write(Data(input.utf8))
        try stdin.fileHandleForWriting.close()
        let outputData = stdout.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        try errorHandle.close()
        let errorData = try Data(contentsOf: errorURL)
        return (process.terminationStatus, String(decoding: outputData, as: UTF8.self), String(decoding: errorData, as: UTF8.self))
    }

    static var smolLM2: String { ChatFixtures.smolLM2Directory.path }

    @Test func tokenizeAndDecode() throws {
        let encoded = try Self.run(["tokenize", "--model", Self.smolLM2], input: "What is the capital of France?")
        #expect(encoded.status == 0, "\(encoded.stderr)")
        #expect(encoded.stdout == "[1780, 314, 260, 3575, 282, 4649, 47]\n")

        let text = "Tabs\tand <|im_end|> émojis 🙂\n"
        let ids = try Self.run(["tokenize", "--model", Self.smolLM2], input: text)
        let decoded = try Self.run(["tokenize", "--model", Self.smolLM2, "--decode"], input: ids.stdout)
        #expect(decoded.status == 0 && decoded.stdout == text, "round trip: \(decoded.stdout.debugDescription) \(decoded.stderr)")
        let skipped = try Self.run(["tokenize", "--model", Self.smolLM2, "--decode", "--skip-special-tokens"], input: "1 504 2")
        #expect(skipped.stdout == "The")

        // Llama 3's post-processor adds BOS unless --no-special-tokens.
        let llama3 = ChatFixtures.url("llama3-chat").path
        let withBOS = try Self.run(["tokenize", "--model", llama3], input: "Hi")
        let withoutBOS = try Self.run(["tokenize", "--model", llama3, "--no-special-tokens"], input: "Hi")
        #expect(withBOS.stdout.hasPrefix("[0, ") && !withoutBOS.stdout.hasPrefix("[0, "), "\(withBOS.stdout) \(withoutBOS.stdout)")

        let bad = try Self.run(["tokenize", "--model", Self.smolLM2, "--decode"], input: "[1, 99999]")
        #expect(bad.status != 0 && bad.stderr.contains("id 2 is 99999: outside the vocabulary (0..<49152)"), "\(bad.stderr)")
        let preset = try Self.run(["tokenize", "--model", "tiny"], input: "x")
        #expect(preset.status != 0 && preset.stderr.contains("tiny: is a preset"), "\(preset.stderr)")
    }

    /// `inspect-data --jsonl` prints exactly the examples the generator computed, in the form train reads.
    @Test func inspectDataJSONL() throws {
        let result = try Self.run(["inspect-data", "--model", Self.smolLM2, "--data", ChatFixtures.url("data", "messages.jsonl").path, "--jsonl"])
        #expect(result.status == 0, "\(result.stderr)")
        let expected = try String(contentsOf: ChatFixtures.url("data", "pretokenized.jsonl"), encoding: .utf8)
        func parse(_ text: String) throws -> [[String: [Int]]] {
            try text.split(separator: "\n").map { try JSONDecoder().decode([String: [Int]].self, from: Data($0.utf8)) }
        }
        #expect(try parse(result.stdout) == parse(expected))
        #expect(result.stderr.contains("examples: 3"), "\(result.stderr)")
    }

    @Test func inspectDataReport() throws {
        let result = try Self.run(["inspect-data", "--model", Self.smolLM2, "--data", ChatFixtures.url("data", "alpaca.json").path,
                                   "--seq-len", "30", "--example", "3", "--train-on", "last"])
        #expect(result.status == 0, "\(result.stderr)")
        #expect(result.stdout.contains("chat template: smollm2 (exact match of the model's template)"))
        #expect(result.stdout.contains("example 3 of 3 (record 3)"), "\(result.stdout)")
        #expect(result.stdout.contains("⟦desserts<|im_end|>⟧"), "\(result.stdout)")
        #expect(result.stdout.contains("yes      \"<|im_end|>\""), "the end-of-turn token is marked trained")
        #expect(result.stdout.contains("longer than --seq-len 30: 3; train truncates them to 30 tokens"), "\(result.stdout)")
    }

    @Test func badDataExitsWithLocation() throws {
        let scratch = try Scratch()
        let cases: [(String, String, [String], String)] = [
            ("malformed.jsonl", "{\"prompt\": \"a\", \"completion\": \"b\"}\n{oops\n", [], "malformed.jsonl:2: malformed JSON"),
            ("empty-list.jsonl", "{\"messages\": []}\n", [], "empty-list.jsonl:1: \"messages\" is an empty list"),
            ("role.jsonl", #"{"messages": [{"role": "bot", "content": "b"}]}"#, [], "role.jsonl:1: messages[0].role is \"bot\""),
            ("empty.jsonl", #"{"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": ""}]}"#, [],
             "empty.jsonl:1: messages[1] is an empty assistant message"),
            ("strict.jsonl", """
                {"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}
                {"messages": [{"role": "user", "content": "a"}]}
                """,
             ["--strict"], "strict.jsonl:2: no supervised token"),
        ]
        for (name, text, options, expected) in cases {
            let url = try scratch.file(name, text)
            let result = try Self.run(["inspect-data", "--model", Self.smolLM2, "--data", url.path] + options)
            #expect(result.status != 0 && result.stderr.contains(expected), "\(name): status \(result.status), stderr \(result.stderr)")
        }
        let template = try Self.run(["inspect-data", "--model", Self.smolLM2, "--data", ChatFixtures.url("data", "alpaca.json").path,
                                     "--chat-template", "llama3"])
        #expect(template.status != 0 && template.stderr.contains("writes <|start_header_id|>"), "\(template.stderr)")
    }

    /// `train` on messages JSONL with a random-init model named by its config.json, whose directory holds a
    /// tokenizer (the directory itself, having no weights, is refused: see ModelIOTests.ResolutionTests):
    /// the file's report is logged and training runs; a preset with text data is refused before starting.
    @Test func trainOnChatData() throws {
        let scratch = try Scratch()
        let model = scratch.url.appendingPathComponent("model")
        try FileManager.default.createDirectory(at: model, withIntermediateDirectories: true)
        for name in ["tokenizer.json", "tokenizer_config.json"] {
            try FileManager.default.copyItem(at: ChatFixtures.url("qwen2-chat", name), to: model.appendingPathComponent(name))
        }
        let config = """
            {"model_type": "qwen2", "vocab_size": 1202, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
             "num_attention_heads": 2, "num_key_value_heads": 1, "max_position_embeddings": 256, "attention_bias": true,
             "tie_word_embeddings": false}
            """
        try config.write(to: model.appendingPathComponent("config.json"), atomically: true, encoding: .utf8)
        let data = try scratch.file("chat.jsonl", """
            {"messages": [{"role": "user", "content": "Hi!"}, {"role": "assistant", "content": "Hello, how can I help?"}]}
            {"messages": [{"role": "user", "content": "Nothing to answer"}]}
            {"messages": [{"role": "system", "content": "Be terse."}, {"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}]}
            """)
        let result = try MPIRun.run(ranks: MPIRun.withoutLauncher, arguments: [
            "train", "--model", model.appendingPathComponent("config.json").path, "--data", data.path, "--max-steps", "2", "--seq-len", "64", "--micro-batch-size", "2",
        ], timeout: 120)
        #expect(result.status == 0, "\(result.stdout)\n\(result.stderr)")
        #expect(result.stdout.contains("data file: \(data.path): 3 records (messages); 1 skipped: no supervised token (line 2)"),
                "\(result.stdout)")

        let preset = try MPIRun.run(ranks: MPIRun.withoutLauncher, arguments: ["train", "--model", "tiny", "--data", data.path], timeout: 60)
        #expect(preset.status != 0 && preset.stderr.contains("tiny: is a preset (random initialisation) and has no tokenizer"),
                "\(preset.stderr)")
    }
}
