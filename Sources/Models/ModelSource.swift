import Checkpoints
import Foundation

/// What `--model` names, resolved: the architecture and, unless it is a random-init preset, the weights.
///
/// Accepted forms, in the order they are tried:
/// 1. a preset name (``ModelPreset``): random initialisation;
/// 2. a `.gguf` file (or a directory holding exactly one `.gguf` and no `config.json`): the config
///    from the GGUF metadata, the tensors through ``GGUFModel`` (HF names, permutation undone);
/// 3. an HF directory: `config.json`, and `model.safetensors.index.json` or `model.safetensors`
///    (F32, F16 or BF16); a directory with only `config.json` is random initialisation;
/// 4. a `config.json` file: random initialisation.
public struct ModelSource {
    public enum Kind: Sendable, Equatable {
        case preset(String)
        case configFile(URL)
        case huggingFace(URL)
        case gguf(URL)
    }

    public let kind: Kind
    public let config: ModelConfig
    /// The tensors under HF names, or nil for random initialisation.
    public let weights: (any TensorSource)?
    /// The GGUF file, when the model is one (its metadata carries the tokenizer and chat template).
    public let gguf: GGUFFile?

    /// Where the weights are read from (for messages), or the preset's name.
    public var location: String {
        switch kind {
        case .preset(let name): name
        case .configFile(let url): url.path
        case .huggingFace: weights?.location ?? ""
        case .gguf(let url): url.path
        }
    }

    /// The HF directory the model came from, if any (where tokenizer files live).
    public var directory: URL? {
        switch kind {
        case .huggingFace(let url): url
        case .configFile(let url): url.deletingLastPathComponent()
        case .gguf, .preset: nil
        }
    }

    public init(kind: Kind, config: ModelConfig, weights: (any TensorSource)?, gguf: GGUFFile?) {
        self.kind = kind
        self.config = config
        self.weights = weights
        self.gguf = gguf
    }

    /// Resolves `name`; throws `ModelConfigError` (unknown name, bad config.json) or `CheckpointError`
    /// (unreadable or malformed checkpoint, naming the file and tensor).
    public static func open(_ name: String) throws -> ModelSource {
        if let preset = ModelPreset.config(named: name) {
            return ModelSource(kind: .preset(name), config: preset, weights: nil, gguf: nil)
        }
        let url = URL(fileURLWithPath: name)
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: url.path, isDirectory: &isDirectory) else {
            throw ModelConfigError.unknownPreset(name, known: ModelPreset.all.map(\.name))
        }
        if isDirectory.boolValue {
            let configURL = url.appendingPathComponent("config.json")
            guard FileManager.default.fileExists(atPath: configURL.path) else {
                let ggufs = ((try? FileManager.default.contentsOfDirectory(atPath: url.path)) ?? []).filter { $0.hasSuffix(".gguf") }
                if ggufs.count == 1 { return try openGGUF(url.appendingPathComponent(ggufs[0])) }
                throw CheckpointError(.unreadableFile, path: url.path,
                                      expected: "an HF model directory (config.json with model.safetensors or model.safetensors.index.json) or exactly one .gguf file",
                                      found: ggufs.isEmpty ? "no config.json and no .gguf file" : "\(ggufs.count) .gguf files and no config.json")
            }
            let config = try ModelConfig.load(from: configURL)
            let hasWeights = ["model.safetensors.index.json", "model.safetensors"].contains {
                FileManager.default.fileExists(atPath: url.appendingPathComponent($0).path)
            }
            guard hasWeights else { return ModelSource(kind: .configFile(configURL), config: config, weights: nil, gguf: nil) }
            return ModelSource(kind: .huggingFace(url), config: config, weights: try openTensorSource(at: url), gguf: nil)
        }
        if url.pathExtension.lowercased() == "safetensors" {
            throw CheckpointError(.unreadableFile, path: url.path,
                                  expected: "the HF model directory that holds it (with config.json), or a .gguf file",
                                  found: "a bare .safetensors file (it has no architecture)")
        }
        if url.pathExtension.lowercased() == "json" {
            return ModelSource(kind: .configFile(url), config: try ModelConfig.load(from: url), weights: nil, gguf: nil)
        }
        return try openGGUF(url)
    }

    /// Opens a GGUF model file (a wrong magic or truncation is a `CheckpointError` naming the file).
    static func openGGUF(_ url: URL) throws -> ModelSource {
        let model = try GGUFModel(url: url)
        return ModelSource(kind: .gguf(url), config: model.config, weights: model, gguf: model.file)
    }

    /// Checks that every tensor of `layout` is present with the layout's shape, before any rank reads:
    /// a missing or misshapen tensor is a `CheckpointError` naming it, with expected and found shapes.
    public func checkWeights() throws {
        guard let weights else { return }
        try config.checkLayers(against: weights.tensors.keys, location: weights.location)
        for unit in ParameterLayout(config: config).units {
            for tensor in unit.tensors {
                guard let info = weights.tensors[tensor.name] else {
                    throw CheckpointError(.tensorNotFound, path: weights.location, tensor: tensor.name,
                                          expected: "a tensor of shape \(tensor.shape) (the config's architecture)",
                                          found: "no such tensor")
                }
                guard info.shape == tensor.shape else {
                    throw CheckpointError(.inconsistentTensor, path: weights.location, tensor: tensor.name,
                                          expected: "shape \(tensor.shape) (from the config)", found: "shape \(info.shape)")
                }
            }
        }
    }
}
