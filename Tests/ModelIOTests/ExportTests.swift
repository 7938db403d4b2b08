import Checkpoints
import Foundation
import ModelIO
import Models
import Testing
import Tokenizers
import Training

/// export → reload → same logits; the files an HF user expects are there and readable.
@Suite(.serialized) struct ExportTests {
    /// Exports the tiny GGUFs, reloads the directories, compares logits with transformers' goldens, and
    /// leaves the directories (with our logits) for the generator script's transformers check.
    @Test(arguments: ["tiny-llama", "tiny-qwen2"]) func exportReloadSameLogits(_ name: String) throws {
        let goldens = try Fixtures.json(TinyGoldens.self, "\(name)/goldens.json")
        let directory = Fixtures.exportCheck.appendingPathComponent(name)
        try? FileManager.default.removeItem(at: directory)
        let source = try ModelSource.open(Fixtures.url("\(name)/\(name).gguf").path)
        let files = try ModelExport.export(source, to: directory)
        #expect(Set(files) == ["config.json", "model.safetensors", "generation_config.json", "tokenizer.json", "tokenizer_config.json"])

        let reloaded = try ModelSource.open(directory.path)
        var expected = source.config
        expected.headDim = expected.headDimension   // config.json always states head_dim
        #expect(reloaded.config == expected)
        let (_, store) = try loadDense(directory.path, withGradients: false)
        let ids = goldens.input_ids.map { Int32($0) }
        let logits = try fullLogits(ids, config: reloaded.config, store: store)
        let (difference, index) = maxDifference(logits, goldens.logits)
        #expect(difference <= 1e-4 * maxAbs(goldens.logits), "\(name): reloaded logits differ by \(difference) at \(index)")

        // Exported tensors are F32 under HF names, exactly the GGUF's values.
        let file = try SafetensorsFile(url: directory.appendingPathComponent("model.safetensors"))
        let original = try SafetensorsFile(url: Fixtures.url("\(name)/model.safetensors"))
        #expect(Set(file.tensors.keys) == Set(original.tensors.keys.filter { !(source.config.tieWordEmbeddings && $0 == "lm_head.weight") }))
        for tensorName in file.tensors.keys {
            #expect(file.tensors[tensorName]?.dtype == .f32)
            #expect(try file.read(tensorName) == original.read(tensorName), "\(tensorName)")
        }
        // The tokenizer files load (our tokenizer; transformers in the generator's check).
        let tokenizer = try Tokenizer(tokenizerJSON: directory.appendingPathComponent("tokenizer.json"))
        #expect(tokenizer.vocabularySize == source.config.vocabSize)
        #expect(tokenizer.eosTokenID == 2 && tokenizer.bosTokenID == 1)
        let tokenizerConfig = try JSONSerialization.jsonObject(with: Data(contentsOf: directory.appendingPathComponent("tokenizer_config.json"))) as? [String: Any]
        #expect(tokenizerConfig?["chat_template"] is String)
        #expect(tokenizerConfig?["eos_token"] as? String == "<|im_end|>")
        let generation = try JSONSerialization.jsonObject(with: Data(contentsOf: directory.appendingPathComponent("generation_config.json"))) as? [String: Any]
        #expect(generation?["eos_token_id"] as? Int == 2)

        let ours: [String: Any] = ["input_ids": goldens.input_ids, "logits": logits.map { Double($0) }]
        try JSONSerialization.data(withJSONObject: ours).write(to: directory.appendingPathComponent("ours.json"))
    }

    /// An HF directory exports to the same tensors, with its tokenizer files copied.
    @Test func exportOfHFDirectoryCopiesTokenizerFiles() throws {
        let scratch = try ScratchDirectory()
        let input = scratch.url.appendingPathComponent("in"), output = scratch.url.appendingPathComponent("out")
        try FileManager.default.createDirectory(at: input, withIntermediateDirectories: true)
        for file in ["config.json", "model.safetensors"] {
            try FileManager.default.copyItem(at: Fixtures.url("tiny-qwen2/\(file)"), to: input.appendingPathComponent(file))
        }
        try Data(#"{"eos_token": "<|im_end|>"}"#.utf8).write(to: input.appendingPathComponent("tokenizer_config.json"))
        let files = try ModelExport.export(ModelSource.open(input.path), to: output)
        #expect(files.contains("tokenizer_config.json"))
        let a = try SafetensorsFile(url: input.appendingPathComponent("model.safetensors"))
        let b = try SafetensorsFile(url: output.appendingPathComponent("model.safetensors"))
        for name in a.tensors.keys { #expect(try a.read(name) == b.read(name), "\(name)") }
        // Refuses to overwrite.
        #expect(throws: (any Error).self) { try ModelExport.export(ModelSource.open(input.path), to: output) }
    }

    /// SmolLM2: GGUF → HF directory → reload gives bit-identical logits (the export is lossless F32).
    @Test func smolLM2ExportReloadSameLogits() throws {
        guard let path = Fixtures.smolLM2Path() else { return }
        let scratch = try ScratchDirectory()
        let directory = scratch.url.appendingPathComponent("smollm2")
        let started = Date()
        try ModelExport.export(ModelSource.open(path), to: directory)
        print("SmolLM2 export: \(String(format: "%.2f", Date().timeIntervalSince(started))) s")
        let ids: [Int32] = [1, 9690, 198, 2683, 314, 253, 5356, 30, 2]
        let (source, direct) = try loadDense(path, withGradients: false)
        let (_, reloaded) = try loadDense(directory.path, withGradients: false)
        let a = try fullLogits(ids, config: source.config, store: direct)
        let b = try fullLogits(ids, config: source.config, store: reloaded)
        #expect(a == b, "max difference \(maxDifference(a, b).value)")
        // The exported tokenizer.json encodes as the GGUF metadata's tokenizer does.
        let exported = try Tokenizer(tokenizerJSON: directory.appendingPathComponent("tokenizer.json"))
        let m = try GGUFFile(url: URL(fileURLWithPath: path)).metadata
        let fromGGUF = try Tokenizer(ggufTokens: m["tokenizer.ggml.tokens"]!.stringArray!, merges: m["tokenizer.ggml.merges"]!.stringArray!,
                                     tokenTypes: m["tokenizer.ggml.token_type"]!.intArray!, pre: m["tokenizer.ggml.pre"]?.string,
                                     bosTokenID: 1, eosTokenID: 2)
        #expect(exported.encode("What is the capital of France?") == [1780, 314, 260, 3575, 282, 4649, 47])
        for text in ["<|im_start|>user\nHi there<|im_end|>\n", "  tabs\tand 12345 digits, café 東京 🙂", ""] {
            #expect(exported.encode(text) == fromGGUF.encode(text), "\(text)")
        }
        #expect(exported.eosTokenID == 2)
    }
}
