import Checkpoints
import Foundation
import TestSupport
import Testing
import Training

/// Prepared token files (`zero-sft prepare`): the format round trip, refusal of stale and damaged files,
/// and training on one equal to training on the JSONL it came from.
@Suite(.serialized) struct PreparedFileTests {
    /// Examples with masked prompts, every id below `vocabulary`, lengths 1…`longest`.
    static func examples(count: Int, vocabulary: Int, longest: Int = 50, seed: UInt64 = 1) -> [SFTExample] {
        var random = TestRandom(seed: seed)
        return (0..<count).map { _ in
            let length = 1 + Int(random.next() % UInt64(longest))
            let ids = (0..<length).map { _ in Int32(random.next() % UInt64(vocabulary)) }
            let prompt = Int(random.next() % UInt64(length + 1))
            return SFTExample(inputIDs: ids, labels: ids.enumerated().map { $0.offset < prompt ? -100 : $0.element })
        }
    }

    static func write(_ examples: [SFTExample], vocabulary: Int, to path: String, fingerprint: DataFingerprint = .pretokenized,
                      explicitLabels: Bool = false) throws {
        let writer = try PreparedFileWriter(path: path, vocabularySize: vocabulary, fingerprint: fingerprint, explicitLabels: explicitLabels)
        for (index, example) in examples.enumerated() { try writer.append(example, record: 2 * index + 1) }
        try writer.finish(metadata: ["source": "test.jsonl", "format": "pre-tokenized", "records": examples.count])
    }

    @Test("ids and labels round trip exactly: u16 (vocabulary 65,536), u32 (65,537), and explicit labels",
          arguments: [(65536, 2, false), (65537, 4, false), (300, 2, true)])
    func roundTrip(vocabulary: Int, width: Int, explicit: Bool) throws {
        let scratch = try Scratch()
        var examples = Self.examples(count: 97, vocabulary: vocabulary)
        // The largest id of the vocabulary, and (explicit) a label that is neither -100 nor the id.
        examples[0] = SFTExample(inputIDs: [Int32(vocabulary - 1), 0, 7], labels: explicit ? [-100, 5, 7] : [Int32(vocabulary - 1), -100, 7])
        let path = scratch.url.appendingPathComponent("data.tokens").path
        try Self.write(examples, vocabulary: vocabulary, to: path, explicitLabels: explicit)
        #expect(PreparedFile.isPrepared(path: path))
        let file = try PreparedFile(path: path)
        #expect(file.tokenWidth == width)
        #expect(file.count == examples.count)
        #expect(file.tokenCount == examples.reduce(0) { $0 + $1.count })
        for (index, example) in examples.enumerated() {
            #expect(file.example(index) == example, "example \(index)")
            #expect(file.length(index) == example.count)
            #expect(file.supervisedCount(index) == example.supervisedCount)
            #expect(file.recordNumber(index) == 2 * index + 1)
        }
        #expect(file.report.records == examples.count)
        // Atomic: no temporary file is left next to it.
        #expect(try FileManager.default.contentsOfDirectory(atPath: scratch.url.path) == ["data.tokens"])
    }

    @Test("the data category: a mapped file costs a rank only the plan's index (about 24 bytes per example); in memory, 8 per token more")
    func dataMemory() throws {
        let scratch = try Scratch()
        let examples = Self.examples(count: 500, vocabulary: 256, longest: 40, seed: 9)
        let path = scratch.url.appendingPathComponent("data.tokens").path
        try Self.write(examples, vocabulary: 256, to: path)
        let file = try PreparedFile(path: path)
        let mapped = TrainingPlan(examples: file, sequenceLength: 32, microBatchSize: 2, gradientAccumulation: 1, ranks: 2, seed: 1)
        let inMemory = TrainingPlan(examples: examples, sequenceLength: 32, microBatchSize: 2, gradientAccumulation: 1, ranks: 2, seed: 1)
        #expect(mapped.report == inMemory.report)
        let kept = mapped.kept.count
        #expect(kept > 0 && kept < examples.count)
        // The index: 16 bytes per kept example, and epoch 0's rows (8 per example, 40 per row).
        #expect(mapped.indexBytes == 24 * kept + 40 * mapped.report.rowsPerEpoch)
        #expect(DataMemory(plan: mapped) == {
            var memory = DataMemory(); memory.privateBytes = mapped.indexBytes; memory.mappedBytes = file.mappedBytes; return memory }())
        let tokens = examples.reduce(0) { $0 + $1.count }
        #expect(DataMemory(plan: inMemory).privateBytes == inMemory.indexBytes + 8 * tokens + 80 * examples.count)
        #expect(DataMemory(plan: inMemory).mappedBytes == 0)
        // Every micro-batch of the first steps is the same from the mapping as from memory.
        var first = mapped, second = inMemory
        for step in 0..<4 {
            for rank in 0..<2 {
                let a = first.microBatches(step: step, rank: rank), b = second.microBatches(step: step, rank: rank)
                #expect(a.map(\.count) == b.map(\.count) && a.map(\.supervisedCount) == b.map(\.supervisedCount), "step \(step) rank \(rank)")
            }
        }
    }

    @Test("a truncated or corrupt file is an error naming the file, never a trap")
    func damagedFiles() throws {
        let scratch = try Scratch()
        let path = scratch.url.appendingPathComponent("good.tokens").path
        var examples = Self.examples(count: 40, vocabulary: 256)
        examples[0] = SFTExample(inputIDs: Array(0..<10), labels: [-100, -100] + Array(2..<10))
        try Self.write(examples, vocabulary: 256, to: path)
        let bytes = try Data(contentsOf: URL(fileURLWithPath: path))
        var cases: [(String, Data)] = []
        for keep in [0, 7, 100, 511, 600, bytes.count / 2, bytes.count - 1] { cases.append(("cut-\(keep).tokens", bytes.prefix(keep))) }
        var longer = bytes
        longer.append(0)
        cases.append(("longer.tokens", longer))
        // An id past the vocabulary in the token section (starts at byte 512, u16).
        var badID = bytes
        badID[512] = 0xFF
        badID[513] = 0x7F
        cases.append(("bad-id.tokens", badID))
        // A supervised count that disagrees with the mask: position 1 of example 0 marked trained.
        let maskStart = Int(bytes[160 + 16]) | Int(bytes[160 + 17]) << 8 | Int(bytes[160 + 18]) << 16
        var badMask = bytes
        badMask[maskStart] ^= 0b10
        cases.append(("bad-mask.tokens", badMask))
        var badVersion = bytes
        badVersion[8] = 9
        cases.append(("version.tokens", badVersion))
        for (name, data) in cases {
            let damaged = scratch.url.appendingPathComponent(name).path
            try data.write(to: URL(fileURLWithPath: damaged))
            do {
                _ = try PreparedFile(path: damaged)
                Issue.record("\(name): opened without error")
            } catch {
                #expect("\(error)".contains(damaged), "\(name): the error does not name the file: \(error)")
            }
        }
    }

    @Test("SHA-256 of FIPS 180-4's examples")
    func sha256() {
        #expect(SHA256.hex(SHA256.hash([UInt8]())) == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
        #expect(SHA256.hex(SHA256.hash(Array("abc".utf8))) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        #expect(SHA256.hex(SHA256.hash(Array("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq".utf8)))
                == "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1")
        var hasher = SHA256()
        for _ in 0..<1000 { hasher.update([UInt8](repeating: 0x61, count: 1000)) }
        #expect(SHA256.hex(hasher.finalize()) == "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0")
    }

    // MARK: - Commands

    static func run(_ arguments: [String]) throws -> (status: Int32, stdout: String, stderr: String) {
        try MPIRun.run(ranks: MPIRun.withoutLauncher, arguments: arguments, timeout: 300)  // serialized inside
    }

    @Test("a prepared file made with another --train-on or chat template is refused, naming both hashes and what differs")
    func staleFileIsRefused() throws {
        let scratch = try Scratch()
        let model = try Self.textModel(in: scratch.url)
        let out = scratch.url.appendingPathComponent("chat.bin").path
        let prepared = try Self.run(["prepare", "--model", model, "--data", ChatFixtures.url("data", "messages.jsonl").path, "--out", out])
        #expect(prepared.status == 0, "\(prepared.stderr)")
        let file = try PreparedFile(path: out)
        let hash = SHA256.hex(file.fingerprint.combined)
        // The same options read it, and show what the JSONL shows.
        let fromFile = try Self.run(["inspect-data", "--model", model, "--data", out, "--jsonl"])
        let fromJSONL = try Self.run(["inspect-data", "--model", model, "--data", ChatFixtures.url("data", "messages.jsonl").path, "--jsonl"])
        #expect(fromFile.status == 0 && fromFile.stdout == fromJSONL.stdout, "\(fromFile.stderr)")
        for (options, differs) in [(["--train-on", "last"], "--train-on (assistant vs last) differs"),
                                   (["--chat-template", "chatml"], "the chat template differs")] {
            let refused = try Self.run(["inspect-data", "--model", model, "--data", out] + options)
            #expect(refused.status != 0)
            #expect(refused.stderr.contains("\(out): stale: prepared with"), "\(refused.stderr)")
            #expect(refused.stderr.contains(hash), "the file's hash \(hash) is not named: \(refused.stderr)")
            #expect(refused.stderr.contains(differs), "\(refused.stderr)")
            let hashes = refused.stderr.split(separator: "(hash ").count - 1
            #expect(hashes == 2, "expected both hashes: \(refused.stderr)")
        }
    }

    /// Runs `train` on `ranks` ranks and returns each logged step's loss and parameter checksum (`--debug`).
    static func train(ranks: Int, _ arguments: [String], in directory: URL, label: String) throws -> (steps: [[Double]], stdout: String) {
        let metrics = directory.appendingPathComponent("\(label).jsonl")
        let result = try MPIRun.run(ranks: ranks, arguments: ["train", "--debug", "--metrics-file", metrics.path] + arguments, timeout: 600)
        guard result.status == 0 else { throw TrainFailure(description: "\(label): exit \(result.status)\n\(result.stdout)\n\(result.stderr)") }
        let steps = try String(contentsOf: metrics, encoding: .utf8).split(separator: "\n").map { line in
            let object = try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any] ?? [:]
            return [object["loss"] as? Double ?? .nan, object["parameter_checksum"] as? Double ?? .nan]
        }
        return (steps, result.stdout)
    }

    struct TrainFailure: Error, CustomStringConvertible { var description: String }

    @Test("2 ranks: training on a prepared file equals training on its pre-tokenized JSONL, bit for bit")
    func preparedTrainsLikeJSONL() throws {
        let scratch = try Scratch()
        let jsonl = scratch.url.appendingPathComponent("data.jsonl")
        try (Self.examples(count: 120, vocabulary: 256, longest: 90, seed: 4).map(TokenizedDataset.jsonLine).joined(separator: "\n") + "\n")
            .write(to: jsonl, atomically: true, encoding: .utf8)
        let prepared = scratch.url.appendingPathComponent("data.prepared").path
        let made = try Self.run(["prepare", "--model", "tiny", "--data", jsonl.path, "--out", prepared])
        #expect(made.status == 0, "\(made.stderr)")
        let common = ["--model", "tiny", "--seq-len", "64", "--max-steps", "5", "--micro-batch-size", "2", "--lr", "1e-3", "--zero-stage", "3"]
        let fromJSONL = try Self.train(ranks: 2, common + ["--data", jsonl.path], in: scratch.url, label: "jsonl")
        let fromFile = try Self.train(ranks: 2, common + ["--data", prepared], in: scratch.url, label: "prepared")
        #expect(fromJSONL.steps.count == 5)
        #expect(fromFile.steps == fromJSONL.steps, "losses and checksums differ:\n\(fromFile.steps)\n\(fromJSONL.steps)")
        #expect(fromFile.stdout.contains("mapped, shared"), "the ledger does not show the mapping:\n\(fromFile.stdout.prefix(1500))")
        // eval reads it too: the same loss, sums and counts (the last line's JSON, but for the seconds).
        func evaluation(_ data: String) throws -> String {
            let result = try MPIRun.run(ranks: 2, arguments: ["eval", "--model", "tiny", "--seq-len", "64", "--data", data], timeout: 300)
            let last = result.stdout.split(separator: "\n").last.map(String.init) ?? ""
            return last.replacingOccurrences(of: #""seconds":[0-9.e-]+"#, with: "", options: .regularExpression)
        }
        let evaluated = try evaluation(prepared)
        #expect(evaluated.contains("\"loss\""), "\(evaluated)")
        #expect(evaluated == (try evaluation(jsonl.path)))
    }

    /// A random-init model directory (config.json) with SmolLM2's tokenizer and chat template.
    static func textModel(in directory: URL) throws -> String {
        let model = directory.appendingPathComponent("model")
        try FileManager.default.createDirectory(at: model, withIntermediateDirectories: true)
        for name in ["tokenizer.json", "tokenizer_config.json"] {
            try FileManager.default.copyItem(at: ChatFixtures.smolLM2Directory.appendingPathComponent(name), to: model.appendingPathComponent(name))
        }
        let config = """
            {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 16, "intermediate_size": 32,
             "num_attention_heads": 2, "num_key_value_heads": 1, "num_hidden_layers": 1, "vocab_size": 49152,
             "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "max_position_embeddings": 512, "tie_word_embeddings": true,
             "bos_token_id": 1, "eos_token_id": 2, "hidden_act": "silu"}
            """
        try config.write(to: model.appendingPathComponent("config.json"), atomically: true, encoding: .utf8)
        return model.appendingPathComponent("config.json").path
    }

    static func conversations(_ count: Int) -> String {
        (0..<count).map { index in
            let turns = (0...(index % 3)).map { turn in
                #"{"role": "user", "content": "Question \#(index).\#(turn): what is \#(index) plus \#(turn)?"}, "#
                    + #"{"role": "assistant", "content": "It is \#(index + turn)."}"#
            }
            return #"{"messages": [\#(turns.joined(separator: ", "))]}"#
        }.joined(separator: "\n") + "\n"
    }

    @Test("3 ranks tokenizing JSONL in slices train exactly as on the file prepared by one process; a tokenizing error on the last rank names its line")
    func slicedTokenizationEqualsOneRank() throws {
        let scratch = try Scratch()
        let model = try Self.textModel(in: scratch.url)
        let jsonl = scratch.url.appendingPathComponent("chat.jsonl")
        try Self.conversations(31).write(to: jsonl, atomically: true, encoding: .utf8)
        let prepared = scratch.url.appendingPathComponent("chat.prepared").path
        let made = try Self.run(["prepare", "--model", model, "--data", jsonl.path, "--out", prepared])
        #expect(made.status == 0, "\(made.stderr)")
        let common = ["--model", model, "--seq-len", "128", "--max-steps", "3", "--micro-batch-size", "2", "--lr", "1e-3", "--zero-stage", "3"]
        let fromJSONL = try Self.train(ranks: 3, common + ["--data", jsonl.path], in: scratch.url, label: "jsonl")
        let fromFile = try Self.train(ranks: 3, common + ["--data", prepared], in: scratch.url, label: "prepared")
        #expect(fromJSONL.steps.count == 3)
        #expect(fromFile.steps == fromJSONL.steps, "losses and checksums differ:\n\(fromFile.steps)\n\(fromJSONL.steps)")

        // Line 32 has no assistant turn: with --strict only tokenizing finds it, on rank 2 of 3.
        let bad = scratch.url.appendingPathComponent("bad.jsonl")
        try (Self.conversations(31) + #"{"messages": [{"role": "user", "content": "nothing to answer"}]}"# + "\n")
            .write(to: bad, atomically: true, encoding: .utf8)
        let failed = try MPIRun.run(ranks: 3, arguments: ["train", "--strict", "--data", bad.path] + common, timeout: 300)
        #expect(failed.status != 0)
        #expect(failed.stderr.contains("\(bad.path):32: no supervised token"), "\(failed.stderr)")
    }
}
