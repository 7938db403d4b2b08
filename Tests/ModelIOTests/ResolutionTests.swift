import Checkpoints
import Foundation
import ModelIO
import Models
import TestSupport
import Testing
import Tokenizers
import Training

/// goldens.json of Fixtures/resolution (tools/generate_resolution_fixtures.py): what transformers does.
struct ResolutionGoldens: Decodable {
    struct Loss: Decodable { var loss: Double }
    struct Tie: Decodable { var loss: Double; var tied: Bool; var warning: String? }
    struct Stop: Decodable {
        var config_eos: Int
        var generation_config_eos: [Int]
        var generate_eos: [Int]
        var generate_eos_when_generation_config_has_none: [Int]?
    }
    struct DuplicateKey: Decodable {
        struct Parsed: Decodable { var input_ids: [Int]; var labels: [Int] }
        var line: String
        var parsed: Parsed
    }
    var tiny_llama_loss: Double
    var tied_head_differs: Tie
    var single_and_index: Loss
    var inv_freq: Loss
    var generation_eos: Stop
    var duplicate_key_line: DuplicateKey

    static func load() throws -> ResolutionGoldens { try Fixtures.json(ResolutionGoldens.self, "resolution/goldens.json") }
}

/// `--model` resolved as transformers resolves it (issue 12, kinds 3 and 8), and resolved once (issue 8).
/// Each test fails on the resolver before ModelIO; losses are transformers' on tiny-llama's example, to 1e-4.
@Suite(.serialized) struct ResolutionTests {
    /// The masked loss of tiny-llama's golden example under `source` (from full logits, in Double).
    static func loss(_ source: ModelSource) throws -> Double {
        let goldens = try Fixtures.json(TinyGoldens.self, "tiny-llama/goldens.json")
        let store = try ModelExport.denseStore(for: source)
        let logits = try fullLogits(goldens.input_ids.map { Int32($0) }, config: source.config, store: store)
        let vocabulary = source.config.vocabSize
        var sum = 0.0, count = 0
        for position in 0..<(goldens.input_ids.count - 1) where goldens.labels[position + 1] != -100 {
            let row = logits[(position * vocabulary)..<((position + 1) * vocabulary)].map(Double.init)
            let top = row.max() ?? 0
            let logSum = top + log(row.reduce(0) { $0 + exp($1 - top) })
            sum += logSum - row[goldens.labels[position + 1]]
            count += 1
        }
        return sum / Double(count)
    }

    /// The error `body` throws, as text (nil when it does not throw).
    static func failure(_ body: () throws -> Void) -> String? {
        do { try body(); return nil } catch { return "\(error)" }
    }

    /// A directory with tiny-llama's config (edited by `edit`) and the given files.
    static func directory(in scratch: ScratchDirectory, _ name: String, edit: (inout [String: Any]) -> Void = { _ in },
                          files: [String: URL] = ["model.safetensors": Fixtures.url("tiny-llama/model.safetensors")]) throws -> URL {
        let directory = scratch.url.appendingPathComponent(name)
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        var config = try JSONSerialization.jsonObject(with: Data(contentsOf: Fixtures.url("tiny-llama/config.json"))) as? [String: Any] ?? [:]
        edit(&config)
        try JSONSerialization.data(withJSONObject: config).write(to: directory.appendingPathComponent("config.json"))
        for (name, url) in files { try FileManager.default.copyItem(at: url, to: directory.appendingPathComponent(name)) }
        return directory
    }

    // MARK: - Kind 3: tensors the layout does not use

    /// tie_word_embeddings true with a stored lm_head that differs: transformers warns and does not tie
    /// (loss 9.0034 here; the stored head dropped, as before, gives the tied model's 5.6337).
    @Test func tiedConfigWithDifferentHeadIsUntied() throws {
        let goldens = try ResolutionGoldens.load()
        #expect(!goldens.tied_head_differs.tied)
        let source = try ModelSource.open(Fixtures.url("resolution/tied-head-differs").path)
        #expect(!source.config.tieWordEmbeddings, "the resolved config must not tie")
        #expect(source.warnings.contains { $0.contains("lm_head.weight") && $0.contains("NOT tied") }, "\(source.warnings)")
        let loss = try Self.loss(source)
        #expect(abs(loss - goldens.tied_head_differs.loss) <= 1e-4 * goldens.tied_head_differs.loss,
                "loss \(loss) vs transformers \(goldens.tied_head_differs.loss) (tied: \(goldens.tiny_llama_loss))")
    }

    /// A stored lm_head equal to the embedding is a tie (transformers ties; nothing to warn about), and an
    /// lm_head stored alone feeds the embedding (transformers ties the other way round).
    @Test func tiedConfigWithEqualOrOnlyHead() throws {
        let goldens = try ResolutionGoldens.load()
        let scratch = try ScratchDirectory()
        let tiny = try SafetensorsFile(url: Fixtures.url("tiny-llama/model.safetensors"))
        func write(_ names: [String: String], to url: URL) throws {   // stored name → tiny-llama name
            let shapes = names.keys.sorted().map { ($0, tiny.tensors[names[$0]!]!.shape) }
            try SafetensorsWriter.write(layout: shapes, metadata: ["format": "pt"], to: url) { name, elements, destination in
                try tiny.read(names[name]!, elements: elements, into: destination)
            }
        }
        var both = Dictionary(uniqueKeysWithValues: tiny.tensors.keys.map { ($0, $0) })
        both["lm_head.weight"] = "model.embed_tokens.weight"
        let equal = try Self.directory(in: scratch, "equal-head", files: [:])
        try write(both, to: equal.appendingPathComponent("model.safetensors"))
        let tied = try ModelSource.open(equal.path)
        #expect(tied.config.tieWordEmbeddings && tied.warnings.isEmpty, "\(tied.warnings)")
        #expect(abs(try Self.loss(tied) - goldens.tiny_llama_loss) <= 1e-4 * goldens.tiny_llama_loss)

        var headOnly = both
        headOnly["model.embed_tokens.weight"] = nil
        let onlyHead = try Self.directory(in: scratch, "only-head", files: [:])
        try write(headOnly, to: onlyHead.appendingPathComponent("model.safetensors"))
        let swapped = try ModelSource.open(onlyHead.path)
        #expect(swapped.config.tieWordEmbeddings)
        #expect(abs(try Self.loss(swapped) - goldens.tiny_llama_loss) <= 1e-4 * goldens.tiny_llama_loss)
    }

    /// Layers beyond num_hidden_layers and stray names are an error listing them, never a smaller model.
    @Test func unusedTensorsAreRefused() throws {
        let scratch = try ScratchDirectory()
        let fewerLayers = try Self.directory(in: scratch, "fewer-layers") { $0["num_hidden_layers"] = 1 }
        let message = try #require(Self.failure { _ = try ModelSource.open(fewerLayers.path) })
        #expect(message.contains("model.layers.1.mlp.down_proj.weight") && message.contains("9 stored tensors that no layer")
                && message.contains("the config has 1 layers"), "\(message)")

        // A GGUF whose block_count (2 → 1) is below the layers it holds.
        var gguf = try Data(contentsOf: Fixtures.url("tiny-llama/tiny-llama.gguf"))
        let key = Data("llama.block_count".utf8)
        let at = try #require(gguf.range(of: key)).upperBound
        #expect(gguf[at..<(at + 8)] == Data([4, 0, 0, 0, 2, 0, 0, 0]), "llama.block_count: UINT32 2")
        gguf[at + 4] = 1
        let truncatedCount = scratch.url.appendingPathComponent("block-count-1.gguf")
        try gguf.write(to: truncatedCount)
        let ggufMessage = try #require(Self.failure { _ = try ModelSource.open(truncatedCount.path) })
        #expect(ggufMessage.contains(truncatedCount.path) && ggufMessage.contains("model.layers.1.self_attn.q_proj.weight")
                && ggufMessage.contains("holds layer 1"), "\(ggufMessage)")

        let stray = try Self.directory(in: scratch, "stray", files: [:])
        let tiny = try SafetensorsFile(url: Fixtures.url("tiny-llama/model.safetensors"))
        let layout = tiny.tensors.keys.sorted().map { ($0, tiny.tensors[$0]!.shape) } + [("model.vision_tower.weight", [2])]
        try SafetensorsWriter.write(layout: layout, metadata: [:], to: stray.appendingPathComponent("model.safetensors")) { name, elements, destination in
            if name == "model.vision_tower.weight" { destination.update(repeating: 1) } else { try tiny.read(name, elements: elements, into: destination) }
        }
        let strayMessage = try #require(Self.failure { _ = try ModelSource.open(stray.path) })
        #expect(strayMessage.contains("1 stored tensor that no layer of the model uses: model.vision_tower.weight"), "\(strayMessage)")
    }

    /// Old checkpoints' rotary_emb.inv_freq buffers are dropped without a word, as transformers does.
    @Test func rotaryInverseFrequencyBuffersAreIgnored() throws {
        let goldens = try ResolutionGoldens.load()
        let source = try ModelSource.open(Fixtures.url("resolution/inv-freq").path)
        #expect(source.warnings.isEmpty)
        #expect(try SafetensorsFile(url: Fixtures.url("resolution/inv-freq/model.safetensors")).tensors.keys.contains("model.layers.0.self_attn.rotary_emb.inv_freq"))
        #expect(abs(try Self.loss(source) - goldens.inv_freq.loss) <= 1e-4 * goldens.inv_freq.loss)
    }

    // MARK: - Kind 8: files and configs resolved as transformers does

    /// model.safetensors beside an index naming other weights: transformers reads model.safetensors; so do
    /// we, with a warning naming both files (the index's halved weights would give another loss).
    @Test func singleFileWinsOverIndex() throws {
        let goldens = try ResolutionGoldens.load()
        let directory = Fixtures.url("resolution/single-and-index")
        let source = try ModelSource.open(directory.path)
        let readsSingleFile = source.weights.map { $0.stored.location.hasSuffix("/model.safetensors") } ?? false
        #expect(readsSingleFile, "reads \(source.location)")
        #expect(source.warnings.contains { $0.contains("model.safetensors.index.json") && $0.contains("reading model.safetensors") },
                "\(source.warnings)")
        #expect(abs(try Self.loss(source) - goldens.single_and_index.loss) <= 1e-4 * goldens.single_and_index.loss)
        #expect(try openTensorSource(at: directory).location.hasSuffix("/model.safetensors"))
    }

    /// A directory with config.json and no safetensors weights is an error saying what it holds, never a
    /// random model; a config.json named as a file is random initialisation.
    @Test func directoryWithoutWeightsIsRefused() throws {
        let scratch = try ScratchDirectory()
        let bare = try Self.directory(in: scratch, "config-only", files: [:])
        let message = try #require(Self.failure { _ = try ModelSource.open(bare.path) })
        #expect(message.contains(bare.path) && message.contains("no model.safetensors") && message.contains("no weights at all"), "\(message)")

        let pickle = try Self.directory(in: scratch, "pickle", files: [:])
        try Data([0x80, 0x02]).write(to: pickle.appendingPathComponent("pytorch_model.bin"))
        let pickleMessage = try #require(Self.failure { _ = try ModelSource.open(pickle.path) })
        #expect(pickleMessage.contains("found pytorch_model.bin") && pickleMessage.contains("save_pretrained"), "\(pickleMessage)")

        let random = try ModelSource.open(bare.appendingPathComponent("config.json").path)
        #expect(random.weights == nil && random.kind == .configFile(bare.appendingPathComponent("config.json")))
    }

    /// Stop ids: generation_config.json's eos_token_id when that file exists (even without one), else config.json's.
    @Test func stopIDsFromGenerationConfig() throws {
        let goldens = try ResolutionGoldens.load().generation_eos
        let scratch = try ScratchDirectory()
        let directory = try Self.directory(in: scratch, "generation-eos", edit: { $0["eos_token_id"] = goldens.config_eos })
        let generation = directory.appendingPathComponent("generation_config.json")
        try FileManager.default.copyItem(at: Fixtures.url("resolution/generation-eos/generation_config.json"), to: generation)
        #expect(try ModelSource.open(directory.path).stopTokenIDs == goldens.generate_eos)
        try Data(#"{"bos_token_id": 1}"#.utf8).write(to: generation)
        #expect(try ModelSource.open(directory.path).stopTokenIDs == (goldens.generate_eos_when_generation_config_has_none ?? []))
        try FileManager.default.removeItem(at: generation)
        #expect(try ModelSource.open(directory.path).stopTokenIDs == [goldens.config_eos])
        try Data(#"{"eos_token_id": 5, "eos_token_id": [3, 4]}"#.utf8).write(to: generation)
        #expect(try ModelSource.open(directory.path).stopTokenIDs == [3, 4], "a repeated key: the last value")
    }

    /// `generate` stops at a generation_config.json stop id that config.json does not list.
    @Test func generateStopsAtGenerationConfigEOS() throws {
        let scratch = try ScratchDirectory()
        let directory = scratch.url.appendingPathComponent("model")
        try ModelExport.export(ModelSource.open(Fixtures.url("tiny-llama/tiny-llama.gguf").path), to: directory)
        let arguments = ["generate", "--model", directory.path, "--raw", "--prompt", "hello", "--max-new-tokens", "6", "--json"]
        func generate() throws -> (tokens: [Int], reason: String) {
            let result = try MPIRun.run(ranks: MPIRun.withoutLauncher, arguments: arguments, timeout: 120)
            #expect(result.status == 0, "\(result.stderr)")
            let last = result.stdout.split(separator: "\n").last.map(String.init) ?? ""
            let json = try JSONSerialization.jsonObject(with: Data(last.utf8)) as? [String: Any]
            return (json?["tokens"] as? [Int] ?? [], json?["stop_reason"] as? String ?? "")
        }
        let free = try generate()
        let stop = try #require(free.tokens.indices.first { $0 > 0 && !free.tokens[..<$0].contains(free.tokens[$0]) },
                                "need two different generated tokens: \(free.tokens)")
        try Data(#"{"eos_token_id": [\#(free.tokens[stop])]}"#.utf8).write(to: directory.appendingPathComponent("generation_config.json"))
        let stopped = try generate()
        #expect(stopped.tokens == Array(free.tokens[..<stop]) && stopped.reason == "stop_token",
                "with eos \(free.tokens[stop]) from generation_config.json: \(stopped) (free run: \(free.tokens))")
    }

    /// A repeated key takes its last value everywhere, as Python's json: pre-tokenized records and config.json.
    @Test func repeatedJSONKeysTakeTheLastValue() throws {
        let goldens = try ResolutionGoldens.load().duplicate_key_line
        let scratch = try ScratchDirectory()
        let data = scratch.url.appendingPathComponent("tokens.jsonl")
        try Data((goldens.line + "\n").utf8).write(to: data)
        let examples = try TokenizedDataset.load(from: data, vocabularySize: 128)
        #expect(examples.map { $0.labels.map(Int.init) } == [goldens.parsed.labels])
        #expect(examples.map { $0.inputIDs.map(Int.init) } == [goldens.parsed.input_ids])
        // The same with the second key spelled with an escape (Python: still the same key, the last value wins).
        let escaped = goldens.line.replacingOccurrences(of: #""labels": [-100"#, with: #""label\u0073": [-100"#)
        #expect(escaped != goldens.line)
        try Data((escaped + "\n").utf8).write(to: data)
        #expect(try TokenizedDataset.load(from: data, vocabularySize: 128).map { $0.labels.map(Int.init) } == [goldens.parsed.labels])
        #expect(!JSONLastKeyWins.mayRepeat(["input_ids", "labels"], in: Data(#"{"input_ids": [1], "labels": [1]}"#.utf8)))
        #expect(JSONLastKeyWins.mayRepeat(["input_ids", "labels"], in: Data(#"{"labels": [1], "labels": [2]}"#.utf8)))

        var config = try String(contentsOf: Fixtures.url("tiny-llama/config.json"), encoding: .utf8)
        config.replaceSubrange(try #require(config.range(of: "{")), with: #"{"num_hidden_layers": 7, "#)
        let decoded = try ModelSource.decodeConfig(Data(config.utf8), path: "config.json")
        #expect(decoded.numHiddenLayers == 2, "config.json repeats num_hidden_layers (7, then 2): the last wins")
        #expect(decoded == (try ModelSource.decodeConfig(Data(contentsOf: Fixtures.url("tiny-llama/config.json")), path: "config.json")))

        // An index whose weight_map names model.norm.weight twice: the second shard (the halved weights).
        let sharded = try Self.directory(in: scratch, "repeated-index", files: [
            "a.safetensors": Fixtures.url("tiny-llama/model.safetensors"),
            "b.safetensors": Fixtures.url("resolution/single-and-index/model-00001-of-00001.safetensors"),
        ])
        let names = try SafetensorsFile(url: Fixtures.url("tiny-llama/model.safetensors")).tensors.keys.sorted()
        let map = names.map { #""\#($0)": "a.safetensors""# }.joined(separator: ", ") + #", "model.norm.weight": "b.safetensors""#
        try Data(#"{"metadata": {}, "weight_map": {\#(map)}}"#.utf8).write(to: sharded.appendingPathComponent("model.safetensors.index.json"))
        let norm = try ModelSource.open(sharded.path).weights?.read("model.norm.weight") ?? []
        let halved = try SafetensorsFile(url: Fixtures.url("resolution/single-and-index/model-00001-of-00001.safetensors")).read("model.norm.weight")
        #expect(norm == halved, "weight_map repeats model.norm.weight: the last entry (b.safetensors) wins")
    }

    /// The untied model is what train and export write (config.json says so, the stored head is kept), and
    /// the warning is printed once per job, by rank 0.
    @Test func untiedHeadIsTrainedAndExportedWithOneWarning() throws {
        let scratch = try ScratchDirectory()
        let model = Fixtures.url("resolution/tied-head-differs").path
        let goldens = try Fixtures.json(TinyGoldens.self, "tiny-llama/goldens.json")
        let data = scratch.url.appendingPathComponent("train.jsonl")
        try Data(#"{"input_ids": \#(goldens.input_ids), "labels": \#(goldens.labels)}"#.utf8).write(to: data)
        let trained = scratch.url.appendingPathComponent("trained")
        let train = try MPIRun.run(ranks: 2, arguments: ["train", "--model", model, "--data", data.path, "--max-steps", "1", "--lr", "1e-9",
                                                         "--micro-batch-size", "1", "--seq-len", "32", "--output-dir", trained.path], timeout: 120)
        #expect(train.status == 0, "\(train.stderr)")
        #expect(train.stderr.components(separatedBy: "NOT tied").count == 2, "one warning expected:\n\(train.stderr)")
        let exported = scratch.url.appendingPathComponent("exported")
        let export = try MPIRun.run(ranks: MPIRun.withoutLauncher, arguments: ["export", "--model", model, "--out", exported.path], timeout: 60)
        #expect(export.status == 0 && export.stderr.contains("warning:") && export.stderr.contains("NOT tied"), "\(export.stderr)")
        let stored = try SafetensorsFile(url: Fixtures.url("resolution/tied-head-differs/model.safetensors")).read("lm_head.weight")
        for directory in [trained, exported] {
            let config = try ModelSource.decodeConfig(Data(contentsOf: directory.appendingPathComponent("config.json")), path: directory.path)
            #expect(!config.tieWordEmbeddings, "\(directory.lastPathComponent)/config.json")
            let head = try SafetensorsFile(url: directory.appendingPathComponent("model.safetensors")).read("lm_head.weight")
            let (difference, _) = maxDifference(head, stored)
            #expect(difference <= 1e-6, "\(directory.lastPathComponent): lm_head.weight differs from the stored head by \(difference)")
        }
    }

    // MARK: - Issue 8: one resolution, each file read once

    /// The text setup is loaded once and kept; an export after it copies the bytes already read (the
    /// directory's files could be gone by then), so no file is opened twice.
    @Test func filesAreReadOnce() throws {
        let scratch = try ScratchDirectory()
        let directory = scratch.url.appendingPathComponent("model")
        try ModelExport.export(ModelSource.open(Fixtures.url("tiny-llama/tiny-llama.gguf").path), to: directory)
        let tokenizerBytes = try Data(contentsOf: directory.appendingPathComponent("tokenizer.json"))
        let source = try ModelSource.open(directory.path)
        let setup = try source.textSetup()
        for name in ["tokenizer.json", "tokenizer_config.json", "generation_config.json", "config.json"] {
            try FileManager.default.removeItem(at: directory.appendingPathComponent(name))
        }
        #expect(try source.textSetup().tokenizer === setup.tokenizer)
        let out = scratch.url.appendingPathComponent("out")
        try FileManager.default.createDirectory(at: out, withIntermediateDirectories: true)
        let written = try ModelExport.writeSidecars(from: source, config: source.config, to: out)
        #expect(Set(written) == ["generation_config.json", "tokenizer.json", "tokenizer_config.json"])
        #expect(try Data(contentsOf: out.appendingPathComponent("tokenizer.json")) == tokenizerBytes)
    }
}
