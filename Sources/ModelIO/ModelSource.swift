import Checkpoints
import Foundation
import Models
import Tokenizers

/// What `--model` names, resolved once per process before any MPI work: the architecture, the checked
/// weights, where the tokenizer and chat template come from, the stop ids and the files an export copies.
/// Every command takes this value; nothing below it resolves a path or opens a model file again.
///
/// Accepted forms, in the order they are tried:
/// 1. a preset name (``ModelPreset``): random initialisation;
/// 2. a `.gguf` file (or a directory holding exactly one `.gguf` and no `config.json`): the config
///    from the GGUF metadata, the tensors through ``GGUFModel`` (HF names, permutation undone);
/// 3. an HF directory: `config.json` and the weights transformers would read — `model.safetensors`,
///    else `model.safetensors.index.json` (when both are there, the single file, with a warning);
///    F32, F16 or BF16. A directory without safetensors weights is an error saying what it holds
///    (`pytorch_model.bin`: how to convert it), never a random model;
/// 4. a `config.json` file: random initialisation (the tokenizer, if any, from its directory);
/// 5. a zero-sft training checkpoint folder `OUTPUT_DIR/checkpoint-STEP` (it holds `COMPLETE` or rank files
///    and no safetensors weights): the config and the tokenizer/template files the save copied into it,
///    the parameters from its `params` role (``CheckpointTensors``: every shard file's xxh64 checked on
///    opening, then read by range). An output directory that holds checkpoints but no final model is an
///    error that names them: as transformers, only the checkpoint folder itself is a model.
///
/// Opening checks every tensor's name and shape against the config once (``ModelWeights``), and applies
/// transformers' rule for a stored head that differs from a tied embedding (the resolved ``config``
/// then says `tie_word_embeddings: false`; see ``warnings``).
///
/// Each file is opened once per process: the weights are memory-mapped by their readers, and the small
/// files (`config.json`, `generation_config.json`, tokenizer files) are read through ``files``, which keeps
/// their bytes for the tokenizer and for an export's copies. The tokenizer is loaded on first use of
/// ``text()`` (only commands that see text need it) and kept.
public struct ModelSource {
    /// Where the model comes from.
    ///
    /// Nothing outside ``open(_:)`` switches on the kind to load.
    public enum Kind: Sendable, Equatable {
        case preset(String)
        case configFile(URL)
        case huggingFace(URL)
        case gguf(URL)
        /// A zero-sft training checkpoint folder (`checkpoint-STEP`): its `params`, config and tokenizer files.
        case checkpoint(URL)
    }

    /// The `--model` value as given.
    public let name: String
    public let kind: Kind
    /// The architecture the weights describe (``ModelWeights/check(_:config:unmapped:)`` may clear
    /// `tie_word_embeddings`).
    public let config: ModelConfig
    /// The checked tensors under HF names, or nil for random initialisation.
    public let weights: ModelWeights?
    /// The GGUF file, when the model is one (its metadata carries the tokenizer and chat template).
    public let gguf: GGUFFile?
    /// The model's directory (HF directory, or the one holding a `config.json`), read once per file.
    public let files: ModelFiles?
    /// Ids that end a generated reply, as transformers' `generate` picks them: `generation_config.json`'s
    /// `eos_token_id` when the directory has that file (none when the file has no such key: transformers does
    /// not fall back), else `config.json`'s (or the GGUF's `tokenizer.ggml.eos_token_id`). One id or a list.
    public let stopTokenIDs: [Int]
    /// What the user should know about how the model was resolved (e.g. an index file ignored, a tie undone);
    /// the command prints them once (rank 0).
    public let warnings: [String]
    private let text: TextCache

    /// Where the weights are read from (for messages), or the preset's name.
    public var location: String {
        switch kind {
        case .preset(let name): name
        case .configFile(let url): url.path
        case .huggingFace(let url): weights?.location ?? url.path
        case .gguf(let url): url.path
        case .checkpoint(let url): url.path
        }
    }

    /// The HF directory the model came from, if any (where tokenizer files live).
    public var directory: URL? { files?.directory }

    /// The tokenizer and the model's own chat template source, loaded on first call and kept: from the
    /// GGUF metadata already parsed, or from the directory's files (read once). Throws `TextSetupError`
    /// for a preset or a directory without tokenizer files.
    public func textSetup() throws -> TextSetup {
        if let loaded = text.value { return loaded }
        let loaded: TextSetup
        if let gguf {
            loaded = try TextSetup.gguf(file: gguf)
        } else if let files {
            loaded = try TextSetup.directory(files, model: name)
        } else {
            loaded = try TextSetup.load(model: name)   // a preset: says it has no tokenizer
        }
        text.value = loaded
        return loaded
    }

    /// Resolves `name` (see the type's documentation). Throws `ModelConfigError` (unknown name, bad
    /// config.json), `CheckpointError` (unreadable or malformed checkpoint, missing or misshapen tensor,
    /// naming the file and tensor) or `ModelSourceError` (a directory without weights, unused tensors).
    public static func open(_ name: String) throws -> ModelSource {
        if let preset = ModelPreset.config(named: name) {
            return ModelSource(name: name, kind: .preset(name), config: preset, weights: nil, gguf: nil, files: nil,
                               stopTokenIDs: preset.eosTokenID?.ids ?? [], warnings: [])
        }
        let url = URL(fileURLWithPath: name)
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: url.path, isDirectory: &isDirectory) else {
            throw ModelConfigError.unknownPreset(name, known: ModelPreset.all.map(\.name))
        }
        if isDirectory.boolValue { return try openDirectory(ModelFiles(directory: url), name: name) }
        switch url.pathExtension.lowercased() {
        case "safetensors":
            throw CheckpointError(.unreadableFile, path: url.path,
                                  expected: "the HF model directory that holds it (with config.json), or a .gguf file",
                                  found: "a bare .safetensors file (it has no architecture)")
        case "bin", "pt", "pth":
            throw ModelSourceError(path: url.path, message: "a PyTorch pickle: zero-sft reads safetensors and GGUF only; "
                                   + ModelSourceError.conversionHint)
        case "json":
            let files = try ModelFiles(directory: url.deletingLastPathComponent())
            let config = try decodeConfig(try files.data(url.lastPathComponent) ?? Data(contentsOf: url), path: url.path)
            return ModelSource(name: name, kind: .configFile(url), config: config, weights: nil, gguf: nil, files: files,
                               stopTokenIDs: try stopTokenIDs(files, config: config), warnings: [])
        default:
            return try openGGUF(url, name: name)
        }
    }

    /// Opens a GGUF model file (a wrong magic or truncation is a `CheckpointError` naming the file).
    static func openGGUF(_ url: URL, name: String) throws -> ModelSource {
        let model = try GGUFModel(url: url)
        let (weights, config, warnings) = try ModelWeights.check(model, config: model.config, unmapped: model.unmappedTensors)
        return ModelSource(name: name, kind: .gguf(url), config: config, weights: weights, gguf: model.file, files: nil,
                           stopTokenIDs: config.eosTokenID?.ids ?? [], warnings: warnings)
    }

    static func openDirectory(_ files: ModelFiles, name: String) throws -> ModelSource {
        let path = files.directory.path
        if isTrainingCheckpoint(files) { return try openCheckpoint(files, name: name) }
        guard let configData = try files.data("config.json") else {
            let ggufs = files.names(endingWith: ".gguf")
            if ggufs.count == 1 { return try openGGUF(files.url(ggufs[0]), name: name) }
            if let hint = checkpointsHint(files) { throw ModelSourceError(path: path, message: "no config.json and no model weights" + hint) }
            throw CheckpointError(.unreadableFile, path: path,
                                  expected: "an HF model directory (config.json with model.safetensors or model.safetensors.index.json) or exactly one .gguf file",
                                  found: ggufs.isEmpty ? "no config.json and no .gguf file" : "\(ggufs.count) .gguf files and no config.json")
        }
        let declared = try decodeConfig(configData, path: files.url("config.json").path)
        var warnings: [String] = []
        let stored: any TensorSource
        switch SafetensorsWeights.find(in: files.directory) {
        case .single(let url, let shadowedIndex):
            if let shadowedIndex {
                warnings.append("\(path): holds both model.safetensors and \(shadowedIndex.lastPathComponent); "
                                + "reading model.safetensors, as transformers does (the index and its shards are ignored)")
            }
            stored = try SafetensorsFile(url: url)
        case .sharded(let index):
            stored = try ShardedSafetensors(indexURL: index)
        case nil:
            throw ModelSourceError(path: path, message: missingWeightsMessage(files))
        }
        let (weights, config, tieWarnings) = try ModelWeights.check(stored, config: declared)
        return ModelSource(name: name, kind: .huggingFace(files.directory), config: config, weights: weights, gguf: nil,
                           files: files, stopTokenIDs: try stopTokenIDs(files, config: config), warnings: warnings + tieWarnings)
    }

    /// What a directory with `config.json` but no safetensors weights holds instead, and what to do.
    static func missingWeightsMessage(_ files: ModelFiles) -> String {
        let pickles = files.names.filter { $0.hasSuffix(".bin") || $0.hasSuffix(".bin.index.json") || $0.hasSuffix(".pt") || $0.hasSuffix(".pth") }
        let ggufs = files.names(endingWith: ".gguf")
        var message = "config.json but no model.safetensors or model.safetensors.index.json"
        if !pickles.isEmpty {
            message += "; found \(pickles.joined(separator: ", ")) (PyTorch pickle weights, which zero-sft does not read): "
                + ModelSourceError.conversionHint
        } else if !ggufs.isEmpty {
            message += "; found \(ggufs.joined(separator: ", ")): name the .gguf file itself as --model"
        } else if let hint = checkpointsHint(files) {
            message += hint
        } else {
            message += " (no weights at all; random initialisation is only for a preset or a config.json named as a file)"
        }
        return message
    }

    /// Whether `files` is a zero-sft training checkpoint folder: its completion marker or a rank file
    /// (`rank-00000-of-00002.safetensors`), and no safetensors weights. An HF Trainer checkpoint also has a
    /// `trainer_state.json` but neither of these: it is the HF directory it is (or, with only
    /// `pytorch_model.bin`, refused with the conversion hint).
    static func isTrainingCheckpoint(_ files: ModelFiles) -> Bool {
        let hasRankFile = files.names.contains { $0.hasPrefix("rank-") && $0.hasSuffix(".safetensors") && $0.contains("-of-") }
        return (files.contains(TrainingCheckpointFormat.completionMarkerName) || hasRankFile)
            && SafetensorsWeights.find(in: files.directory) == nil
    }

    /// A training checkpoint folder as a model: its `config.json`, its `params` (every shard file's xxh64 checked
    /// first; ``CheckpointTensors``) checked against the config by ``ModelWeights``, and its files (tokenizer,
    /// template, `generation_config.json`, copied in by the save) for the tokenizer and an export's sidecars.
    /// Throws `CheckpointError` (incomplete checkpoint, checksum mismatch, truncated shard file: each naming the
    /// file), `ModelSourceError` (no config.json).
    static func openCheckpoint(_ files: ModelFiles, name: String) throws -> ModelSource {
        let reader = try CheckpointReader(directory: files.directory)
        guard let configData = try files.data("config.json") else {
            throw ModelSourceError(path: files.directory.path,
                                   message: "a training checkpoint without config.json (the save copies the model's config.json into the folder)")
        }
        let declared = try decodeConfig(configData, path: files.url("config.json").path)
        let stored = try CheckpointTensors(reader: reader, role: "params")
        let (weights, config, warnings) = try ModelWeights.check(stored, config: declared)
        return ModelSource(name: name, kind: .checkpoint(files.directory), config: config, weights: weights, gguf: nil, files: files,
                           stopTokenIDs: try stopTokenIDs(files, config: config), warnings: warnings)
    }

    /// For an output directory that holds `checkpoint-STEP` folders but no model: which, and what to pass instead
    /// (as transformers, `--model` names the checkpoint folder itself, never the output directory). Nil otherwise.
    static func checkpointsHint(_ files: ModelFiles) -> String? {
        let entries = TrainingCheckpointDirectory.entries(in: files.directory)
        guard !entries.isEmpty else { return nil }
        let names = entries.map(\.url.lastPathComponent)
        let shown = names.suffix(6).joined(separator: ", ") + (names.count > 6 ? " (\(names.count) in all)" : "")
        let latest = TrainingCheckpointDirectory.latest(in: files.directory).latest
        return "; it is a training output directory holding \(shown): name a checkpoint folder itself as --model"
            + (latest.map { " (the latest complete one: \($0.url.path))" } ?? " (none of them is complete)")
    }

    /// `generation_config.json`'s `eos_token_id` when that file exists (transformers' `GenerationConfig.from_pretrained`),
    /// else the config's (`GenerationConfig.from_model_config`).
    static func stopTokenIDs(_ files: ModelFiles, config: ModelConfig) throws -> [Int] {
        guard let data = try files.data("generation_config.json") else { return config.eosTokenID?.ids ?? [] }
        let path = files.url("generation_config.json").path
        struct GenerationConfig: Decodable {
            var eos_token_id: ModelConfig.TokenIDs?
        }
        do {
            return try JSONDecoder().decode(GenerationConfig.self, from: JSONLastKeyWins.normalized(data)).eos_token_id?.ids ?? []
        } catch {
            throw ModelSourceError(path: path, message: "expected a JSON object whose eos_token_id is an integer, a list of integers or null: \(error)")
        }
    }

    /// Reads, decodes and validates the HF `config.json` at `url` (``decodeConfig(_:path:)``); an unreadable
    /// file is a `FileReadError` naming the path and the reason.
    public static func loadConfig(from url: URL) throws -> ModelConfig {
        try decodeConfig(Data(FileContents.read(url.path)), path: url.path)
    }

    /// Decodes and validates an HF `config.json`. A key that appears twice takes its last value, as Python's
    /// `json` (and so transformers) does — Foundation's `JSONDecoder` alone would keep the first.
    public static func decodeConfig(_ data: Data, path: String) throws -> ModelConfig {
        let config: ModelConfig
        do { config = try JSONDecoder().decode(ModelConfig.self, from: JSONLastKeyWins.normalized(data)) } catch let error as ModelConfigError {
            throw ModelConfigError.inFile(path: path, error)
        } catch {
            throw ModelConfigError.malformed(path: path, reason: "\(error)")
        }
        do { try config.validate() } catch let error as ModelConfigError { throw ModelConfigError.inFile(path: path, error) }
        return config
    }

    init(name: String, kind: Kind, config: ModelConfig, weights: ModelWeights?, gguf: GGUFFile?, files: ModelFiles?,
         stopTokenIDs: [Int], warnings: [String]) {
        self.name = name
        self.kind = kind
        self.config = config
        self.weights = weights
        self.gguf = gguf
        self.files = files
        self.stopTokenIDs = stopTokenIDs
        self.warnings = warnings
        self.text = TextCache()
    }

    /// Fills parameter ranges of the model: from the checked weights by HF name (ranged reads: under
    /// stage 3 a rank reads only its shards), or random from `seed` for a preset or a bare config.
    /// - Returns: `fill(unit, elements, destination)`, `destination.count == elements.count`.
    public func initializer(seed: UInt64)
        -> (_ unit: Int, _ elements: Range<Int>, _ destination: UnsafeMutableBufferPointer<Float>) throws -> Void
    {
        let config = config, layout = ParameterLayout(config: config)
        guard let weights else {
            return { unit, range, destination in
                ParameterInitialization.fill(destination, unit: unit, elements: range, layout: layout, config: config, seed: seed)
            }
        }
        return { unit, range, destination in
            try weights.fill(destination, unit: unit, elements: range, layout: layout)
        }
    }
}

/// The tokenizer of a ``ModelSource``, loaded on first use.
final class TextCache {
    var value: TextSetup?
}

extension ModelSourceError {
    /// How to turn PyTorch pickle weights into safetensors.
    static let conversionHint = "convert them with transformers: "
        + "python -c \"from transformers import AutoModelForCausalLM as M; M.from_pretrained('DIR').save_pretrained('OUT')\" "
        + "(writes model.safetensors), or pass a .gguf"
}
