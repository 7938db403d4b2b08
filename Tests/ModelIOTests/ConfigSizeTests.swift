import Checkpoints
import Foundation
import Models
import TestSupport
import Testing

/// Sizes are checked before anything is allocated from them (issue 12 kind 6): a bad config or GGUF
/// header, or a `--seq-len` no host can hold, ends the binary with a message naming the key or option
/// and exit status 1 — never a trap (132/133/134, or a signal) and never gigabytes allocated first.
@Suite(.serialized) struct ConfigSizeTests {
    static var tinyConfig: [String: Any] { [
        "model_type": "llama", "vocab_size": 64, "hidden_size": 32, "intermediate_size": 48,
        "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
    ] }

    static func expectRefused(_ arguments: [String], mentions fragments: [String], sourceLocation: SourceLocation = #_sourceLocation) throws {
        let result = try MPIRun.run(ranks: MPIRun.withoutLauncher, arguments: arguments, timeout: 60)
        #expect(result.status == 1, "zero-sft \(arguments.joined(separator: " ")) exited \(result.status) (a trap is 132–134):\n\(result.stderr)",
                sourceLocation: sourceLocation)
        for fragment in fragments {
            #expect(result.stderr.contains(fragment), "stderr lacks '\(fragment)':\n\(result.stderr)", sourceLocation: sourceLocation)
        }
    }

    /// config.json values that used to trap or allocate without bound.
    @Test(arguments: [
        ("head_dim", -2, "head_dim"),                                 // exited 132 with no message
        ("vocab_size", 100_000_000_000, "vocab_size"),                 // trapped in FloatBuffer
        ("num_hidden_layers", 4_294_967_296, "num_hidden_layers"),     // built a 2^32-layer layout first
        ("hidden_size", 0, "hidden_size"),
        ("num_key_value_heads", 3, "num_key_value_heads"),
        ("intermediate_size", -1, "intermediate_size"),
        ("max_position_embeddings", 0, "max_position_embeddings"),
    ] as [(String, Int, String)])
    func badConfigValueIsNamed(key: String, value: Int, mentioned: String) throws {
        let scratch = try ScratchDirectory()
        var config = Self.tinyConfig
        config[key] = value
        let url = scratch.url.appendingPathComponent("config.json")
        try JSONSerialization.data(withJSONObject: config).write(to: url)
        try Self.expectRefused(["plan", "--model", url.path, "--ranks", "1", "--zero-stage", "3"], mentions: ["\"\(mentioned)\""])
    }

    /// Each decoder's parameter count must fit in 2^40 even when every size is within its own bound.
    @Test func parameterCountIsBounded() throws {
        var config = ModelConfig(vocabSize: 1 << 22, hiddenSize: 1 << 17, intermediateSize: 1 << 19, numHiddenLayers: 1 << 10,
                                 numAttentionHeads: 1 << 10, numKeyValueHeads: 1 << 10)
        #expect(throws: ModelConfigError.self) { try config.validate() }
        config = ModelConfig(vocabSize: 256, hiddenSize: 64, intermediateSize: 160, numHiddenLayers: 2, numAttentionHeads: 4, numKeyValueHeads: 2)
        try config.validate()
    }

    /// One flipped byte in a GGUF's `llama.block_count` (2 → 16777218) is named before a layout is built.
    @Test func flippedGGUFBlockCountIsNamed() throws {
        let scratch = try ScratchDirectory()
        var bytes = [UInt8](try Data(contentsOf: Fixtures.url("tiny-llama/tiny-llama.gguf")))
        let key = Array("llama.block_count".utf8)
        let at = try #require((0...(bytes.count - key.count)).first { bytes[$0..<($0 + key.count)].elementsEqual(key) })
        let value = at + key.count + 4   // after the key, a u32 type id, then the u32 value
        #expect(bytes[value] == 2)
        bytes[value + 3] = 1
        let url = scratch.url.appendingPathComponent("flipped.gguf")
        try Data(bytes).write(to: url)
        try Self.expectRefused(["plan", "--model", url.path, "--ranks", "1", "--zero-stage", "3"],
                               mentions: ["llama.block_count", "16777218", "blk.N tensor groups present (2"])
    }

    /// An HF directory whose config claims more layers than its safetensors hold.
    @Test func layersBeyondTheCheckpointAreNamed() throws {
        let scratch = try ScratchDirectory()
        let directory = scratch.url.appendingPathComponent("model")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        try FileManager.default.copyItem(at: Fixtures.url("tiny-llama/model.safetensors"), to: directory.appendingPathComponent("model.safetensors"))
        var config = try JSONSerialization.jsonObject(with: Data(contentsOf: Fixtures.url("tiny-llama/config.json"))) as! [String: Any]
        config["num_hidden_layers"] = 1000
        try JSONSerialization.data(withJSONObject: config).write(to: directory.appendingPathComponent("config.json"))
        try Self.expectRefused(["plan", "--model", directory.path, "--ranks", "1", "--zero-stage", "3"],
                               mentions: ["\"num_hidden_layers\" is 1000", "2 present"])
    }

    /// `train --seq-len 100000000` asks the memory planner first and refuses, naming the figures and what to lower.
    @Test func trainRefusesAPlanBeyondAvailableMemory() throws {
        let scratch = try ScratchDirectory()
        let data = scratch.url.appendingPathComponent("data.jsonl")
        try Data(#"{"input_ids": [1, 2, 3, 4], "labels": [1, 2, 3, 4]}"#.utf8).write(to: data)
        try Self.expectRefused(["train", "--model", "tiny", "--data", data.path, "--seq-len", "100000000", "--max-steps", "1"],
                               mentions: ["planned memory", "exceeds MemAvailable", "lower --seq-len", "--force"])
        // Under mpirun every rank refuses before Job.run, counting the ranks on this host from the launcher.
        let result = try MPIRun.run(ranks: 2, arguments: ["train", "--model", "tiny", "--data", data.path, "--seq-len", "100000000",
                                                          "--max-steps", "1"], timeout: 60)
        #expect(result.status != 0 && result.stderr.contains("for the 2 rank(s) on this host"), "\(result.status): \(result.stderr)")
    }
}
