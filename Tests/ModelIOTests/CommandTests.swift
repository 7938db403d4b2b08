import Checkpoints
import Foundation
import TestSupport
import Testing

/// The commands as a user runs them: bad --model inputs fail with a clear message and a non-zero
/// exit; eval's JSON line; generate answering on the real model.
@Suite(.serialized) struct CommandTests {
    static func run(_ arguments: [String], ranks: Int = MPIRun.withoutLauncher, timeout: Double = 120) throws
        -> (status: Int32, stdout: String, stderr: String)
    {
        try MPIRun.run(ranks: ranks, arguments: arguments, timeout: timeout)
    }

    /// A copy of the tiny Llama's HF directory in `scratch`, with `config.json` edited by `edit`.
    static func hfDirectory(in scratch: ScratchDirectory, named name: String,
                            edit: (inout [String: Any]) -> Void = { _ in }) throws -> URL {
        let directory = scratch.url.appendingPathComponent(name)
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        try FileManager.default.copyItem(at: Fixtures.url("tiny-llama/model.safetensors"), to: directory.appendingPathComponent("model.safetensors"))
        var config = try JSONSerialization.jsonObject(with: Data(contentsOf: Fixtures.url("tiny-llama/config.json"))) as! [String: Any]
        edit(&config)
        try JSONSerialization.data(withJSONObject: config).write(to: directory.appendingPathComponent("config.json"))
        return directory
    }

    static func expectFailure(_ arguments: [String], mentions fragments: [String], sourceLocation: SourceLocation = #_sourceLocation) throws {
        let result = try run(arguments)
        #expect(result.status != 0, "zero-sft \(arguments.joined(separator: " ")) exited 0", sourceLocation: sourceLocation)
        for fragment in fragments {
            #expect(result.stderr.contains(fragment), "stderr lacks '\(fragment)':\n\(result.stderr)", sourceLocation: sourceLocation)
        }
    }

    @Test func badModelFilesFailClearly() throws {
        let scratch = try ScratchDirectory()
        let gguf = try Data(contentsOf: Fixtures.url("tiny-llama/tiny-llama.gguf"))
        let out = scratch.url.appendingPathComponent("out").path

        let wrongMagic = scratch.url.appendingPathComponent("wrong-magic.gguf")
        var bytes = gguf
        bytes.replaceSubrange(0..<4, with: Array("GGML".utf8))
        try bytes.write(to: wrongMagic)
        try Self.expectFailure(["export", "--model", wrongMagic.path, "--out", out], mentions: [wrongMagic.path, "wrong magic"])

        let truncated = scratch.url.appendingPathComponent("truncated.gguf")
        try gguf.prefix(gguf.count / 2).write(to: truncated)
        try Self.expectFailure(["generate", "--model", truncated.path, "--prompt", "hi"], mentions: [truncated.path, "truncated file"])

        let truncatedHF = try Self.hfDirectory(in: scratch, named: "truncated-hf")
        let weights = truncatedHF.appendingPathComponent("model.safetensors")
        let full = try Data(contentsOf: weights)
        try full.prefix(full.count - 100).write(to: weights)
        try Self.expectFailure(["export", "--model", truncatedHF.path, "--out", out], mentions: ["model.safetensors", "truncated file"])

        let data = scratch.url.appendingPathComponent("data.jsonl")
        try Data(#"{"input_ids": [1, 2, 3, 4], "labels": [1, 2, 3, 4]}"#.utf8).write(to: data)
        let wrongShape = try Self.hfDirectory(in: scratch, named: "wrong-shape") { $0["intermediate_size"] = 48 }
        try Self.expectFailure(["train", "--model", wrongShape.path, "--data", data.path, "--max-steps", "1"],
                               mentions: ["model.layers.0.mlp.gate_proj.weight", "expected shape [48, 32]", "found shape [64, 32]"])
        try Self.expectFailure(["eval", "--model", wrongShape.path, "--data", data.path],
                               mentions: ["model.layers.0.mlp.gate_proj.weight", "expected shape [48, 32]"])

        try Self.expectFailure(["generate", "--model", scratch.url.appendingPathComponent("missing.gguf").path, "--prompt", "hi"],
                               mentions: ["missing.gguf"])
    }

    /// eval prints a JSON last line; its loss is transformers' for the same example, on 1 or 2 ranks, dense or stage 3.
    @Test func evalLossOnOneAndTwoRanks() throws {
        let goldens = try Fixtures.json(TinyGoldens.self, "tiny-llama/goldens.json")
        let scratch = try ScratchDirectory()
        let data = scratch.url.appendingPathComponent("eval.jsonl")
        let line = #"{"input_ids": \#(goldens.input_ids), "labels": \#(goldens.labels)}"#
        try Data(([line, line, line] + [""]).joined(separator: "\n").utf8).write(to: data)
        let model = Fixtures.url("tiny-llama").path
        var losses: [Double] = []
        for (ranks, stage) in [(MPIRun.withoutLauncher, "0"), (2, "0"), (2, "3")] {
            let result = try Self.run(["eval", "--model", model, "--data", data.path, "--zero-stage", stage], ranks: ranks)
            #expect(result.status == 0, "eval on \(ranks) ranks, stage \(stage): \(result.stderr)")
            let last = result.stdout.split(separator: "\n").last.map(String.init) ?? ""
            let json = try JSONSerialization.jsonObject(with: Data(last.utf8)) as? [String: Any]
            #expect(json?["supervised_tokens"] as? Int == 3 * goldens.supervised, "last line: \(last)")
            #expect(json?["examples"] as? Int == 3)
            let loss = json?["loss"] as? Double ?? .nan
            #expect(abs(loss - goldens.loss) <= 1e-4 * goldens.loss, "ranks \(ranks), stage \(stage): loss \(loss) vs transformers \(goldens.loss)")
            losses.append(loss)
        }
        #expect(losses.allSatisfy { abs($0 - losses[0]) <= 1e-6 * losses[0] }, "losses \(losses)")
    }

    /// bench's JSON carries the warm-up step's loss, and it is transformers' on the same initial weights and
    /// rows: the goldens are tools/torch_sft_step.py's `warmup_loss` (torch 2.13, transformers 5.24) on
    /// `zero-sft export --model tiny --seed 42` with `--seq-len 64 --micro-batch-size 2 --steps 2`, `step
    /// --threads 1` for one rank and `fsdp --ranks 2` for two (FSDP2 over gloo). launch/bench-vs-torch relies
    /// on both: bench's seed-42 init is the export's, and the reference labels and deals rows as bench does.
    @Test func benchWarmUpLossIsTransformers() throws {
        for (ranks, stage, golden) in [(MPIRun.withoutLauncher, "0", 5.573765277862549), (2, "3", 5.577279567718506)] {
            let result = try Self.run(["bench", "--model", "tiny", "--steps", "1", "--seq-len", "64", "--micro-batch-size", "2",
                                       "--zero-stage", stage, "--supervised-fraction", "0.5"], ranks: ranks)
            #expect(result.status == 0, "bench on \(ranks) ranks, stage \(stage): \(result.stderr)")
            let last = result.stdout.split(separator: "\n").last.map(String.init) ?? ""
            let json = try JSONSerialization.jsonObject(with: Data(last.utf8)) as? [String: Any]
            let loss = json?["warmup_loss"] as? Double ?? .nan
            #expect(abs(loss - golden) <= 1e-5 * golden, "ranks \(ranks), stage \(stage): warm-up loss \(loss) vs transformers \(golden); last line: \(last)")
        }
    }

    /// train from a GGUF on 2 ranks at stage 3 (each rank reads only its shards' ranges) writes an HF
    /// directory: the weights (after one step at lr 1e-9) are the GGUF's, and the sidecar files are there.
    @Test func trainFromGGUFWritesHFDirectory() throws {
        let goldens = try Fixtures.json(TinyGoldens.self, "tiny-llama/goldens.json")
        let scratch = try ScratchDirectory()
        let data = scratch.url.appendingPathComponent("train.jsonl")
        try Data(#"{"input_ids": \#(goldens.input_ids), "labels": \#(goldens.labels)}"#.utf8).write(to: data)
        let out = scratch.url.appendingPathComponent("trained")
        let result = try Self.run(["train", "--model", Fixtures.url("tiny-llama/tiny-llama.gguf").path, "--data", data.path,
                                   "--zero-stage", "3", "--max-steps", "1", "--lr", "1e-9", "--micro-batch-size", "1",
                                   "--seq-len", "32", "--output-dir", out.path], ranks: 2)
        #expect(result.status == 0, "\(result.stderr)")
        let files = Set((try? FileManager.default.contentsOfDirectory(atPath: out.path)) ?? [])
        #expect(files.isSuperset(of: ["config.json", "model.safetensors", "generation_config.json", "tokenizer.json", "tokenizer_config.json"]),
                "files: \(files.sorted())")
        let trained = try SafetensorsFile(url: out.appendingPathComponent("model.safetensors"))
        let original = try SafetensorsFile(url: Fixtures.url("tiny-llama/model.safetensors"))
        #expect(trained.tensors.count == original.tensors.count)
        for name in original.tensors.keys.sorted() {
            let (difference, index) = maxDifference(try trained.read(name), try original.read(name))
            #expect(difference <= 1e-6, "\(name): differs by \(difference) at \(index)")
        }
    }

    /// The acceptance check: SmolLM2-135M-Instruct answers "What is the capital of France?" with Paris.
    @Test func smolLM2AnswersParis() throws {
        guard let path = Fixtures.smolLM2Path() else { return }
        let result = try Self.run(["generate", "--model", path, "--prompt", "What is the capital of France?",
                                   "--max-new-tokens", "32", "--json"], timeout: 300)
        #expect(result.status == 0, "\(result.stderr)")
        let last = result.stdout.split(separator: "\n").last.map(String.init) ?? ""
        let json = try JSONSerialization.jsonObject(with: Data(last.utf8)) as? [String: Any]
        let text = json?["text"] as? String ?? ""
        #expect(text.contains("Paris"), "reply: \(text)")
        #expect(json?["stop_reason"] as? String == "stop_token")
        print("SmolLM2: \(text) (\(json?["tokens_per_sec"] ?? "?") tokens/s)")
    }

    /// chat keeps the conversation: a second turn is answered in context; /reset starts over.
    @Test func chatAnswersTwoTurns() throws {
        guard let path = Fixtures.smolLM2Path() else { return }
        let scratch = try ScratchDirectory()
        let input = scratch.url.appendingPathComponent("turns.txt")
        try Data("What is the capital of France?\n/reset\nWhat is the capital of Germany?\n".utf8).write(to: input)
        let binary = try ZeroSFTBinary.locate()
        let (status, text) = try TestProcesses.serially { () throws -> (Int32, String) in
            let process = Process()
            process.executableURL = URL(fileURLWithPath: "/bin/sh")
            process.arguments = ["-c", "\"\(binary.path)\" chat --model \"\(path)\" --max-new-tokens 24 < \"\(input.path)\" 2>/dev/null"]
            let output = Pipe()
            process.standardOutput = output
            try process.run()
            let text = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
            process.waitUntilExit()
            return (process.terminationStatus, text)
        }
        #expect(status == 0)
        let replies = text.split(separator: "\n").map(String.init)
        #expect(replies.count == 2, "replies: \(replies)")
        #expect(replies.first?.contains("Paris") == true, "first reply: \(replies.first ?? "")")
        #expect(replies.last?.contains("Berlin") == true, "second reply: \(replies.last ?? "")")
    }
}
