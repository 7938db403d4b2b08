import Checkpoints
import Foundation

/// The architecture of a decoder-only model, with HF `config.json` key names.
///
/// Covers `LlamaForCausalLM` (SmolLM2, Llama 2/3) and `Qwen2ForCausalLM` (q/k/v biases).
public struct ModelConfig: Codable, Sendable, Equatable {
    public var architectures: [String]?
    public var modelType: String
    public var vocabSize: Int
    public var hiddenSize: Int
    public var intermediateSize: Int
    public var numHiddenLayers: Int
    public var numAttentionHeads: Int
    public var numKeyValueHeads: Int
    public var headDim: Int?
    public var rmsNormEps: Double
    public var ropeTheta: Double
    public var maxPositionEmbeddings: Int
    public var tieWordEmbeddings: Bool
    public var initializerRange: Double
    public var attentionBias: Bool
    public var hiddenAct: String
    public var bosTokenID: Int?
    public var eosTokenID: TokenIDs?
    public var torchDtype: String?

    /// `eos_token_id` is one id or a list of ids in HF configs.
    public enum TokenIDs: Codable, Sendable, Equatable {
        case one(Int)
        case many([Int])
        public init(from decoder: Decoder) throws {
            let container = try decoder.singleValueContainer()
            if let id = try? container.decode(Int.self) { self = .one(id) } else { self = .many(try container.decode([Int].self)) }
        }
        public func encode(to encoder: Encoder) throws {
            var container = encoder.singleValueContainer()
            switch self {
            case .one(let id): try container.encode(id)
            case .many(let ids): try container.encode(ids)
            }
        }
        public var ids: [Int] { switch self { case .one(let id): [id]; case .many(let ids): ids } }
    }

    enum CodingKeys: String, CodingKey {
        case architectures
        case modelType = "model_type"
        case vocabSize = "vocab_size"
        case hiddenSize = "hidden_size"
        case intermediateSize = "intermediate_size"
        case numHiddenLayers = "num_hidden_layers"
        case numAttentionHeads = "num_attention_heads"
        case numKeyValueHeads = "num_key_value_heads"
        case headDim = "head_dim"
        case rmsNormEps = "rms_norm_eps"
        case ropeTheta = "rope_theta"
        case maxPositionEmbeddings = "max_position_embeddings"
        case tieWordEmbeddings = "tie_word_embeddings"
        case initializerRange = "initializer_range"
        case attentionBias = "attention_bias"
        case hiddenAct = "hidden_act"
        case bosTokenID = "bos_token_id"
        case eosTokenID = "eos_token_id"
        case torchDtype = "torch_dtype"
        case ropeScaling = "rope_scaling"
        case mlpBias = "mlp_bias"
        case ropeParameters = "rope_parameters"
        case useSlidingWindow = "use_sliding_window"
    }

    public init(
        modelType: String = "llama", vocabSize: Int, hiddenSize: Int, intermediateSize: Int,
        numHiddenLayers: Int, numAttentionHeads: Int, numKeyValueHeads: Int, headDim: Int? = nil,
        rmsNormEps: Double = 1e-5, ropeTheta: Double = 10000, maxPositionEmbeddings: Int = 2048,
        tieWordEmbeddings: Bool = true, initializerRange: Double = 0.02, attentionBias: Bool = false,
        bosTokenID: Int? = nil, eosTokenID: Int? = nil
    ) {
        self.architectures = [modelType == "qwen2" ? "Qwen2ForCausalLM" : "LlamaForCausalLM"]
        self.modelType = modelType
        self.vocabSize = vocabSize
        self.hiddenSize = hiddenSize
        self.intermediateSize = intermediateSize
        self.numHiddenLayers = numHiddenLayers
        self.numAttentionHeads = numAttentionHeads
        self.numKeyValueHeads = numKeyValueHeads
        self.headDim = headDim
        self.rmsNormEps = rmsNormEps
        self.ropeTheta = ropeTheta
        self.maxPositionEmbeddings = maxPositionEmbeddings
        self.tieWordEmbeddings = tieWordEmbeddings
        self.initializerRange = initializerRange
        self.attentionBias = attentionBias
        self.hiddenAct = "silu"
        self.bosTokenID = bosTokenID
        self.eosTokenID = eosTokenID.map { .one($0) }
        self.torchDtype = "float32"
    }

    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        architectures = try c.decodeIfPresent([String].self, forKey: .architectures)
        modelType = try c.decodeIfPresent(String.self, forKey: .modelType) ?? "llama"
        vocabSize = try c.decode(Int.self, forKey: .vocabSize)
        hiddenSize = try c.decode(Int.self, forKey: .hiddenSize)
        intermediateSize = try c.decode(Int.self, forKey: .intermediateSize)
        numHiddenLayers = try c.decode(Int.self, forKey: .numHiddenLayers)
        numAttentionHeads = try c.decode(Int.self, forKey: .numAttentionHeads)
        numKeyValueHeads = try c.decodeIfPresent(Int.self, forKey: .numKeyValueHeads) ?? numAttentionHeads
        headDim = try c.decodeIfPresent(Int.self, forKey: .headDim)
        rmsNormEps = try c.decodeIfPresent(Double.self, forKey: .rmsNormEps) ?? 1e-6
        // transformers 5 writes `rope_parameters: {"rope_theta": …, "rope_type": "default"}` instead of `rope_theta`.
        let ropeParameters = try? c.decodeIfPresent([String: JSONScalar].self, forKey: .ropeParameters)
        if let type = ropeParameters?["rope_type"], case .string(let name) = type, name != "default" {
            throw ModelConfigError.unsupported(key: "rope_parameters.rope_type", value: name,
                                               expected: "default (rope scaling is not implemented yet)")
        }
        var nestedTheta: Double? = nil
        if let theta = ropeParameters?["rope_theta"], case .number(let value) = theta { nestedTheta = value }
        ropeTheta = try c.decodeIfPresent(Double.self, forKey: .ropeTheta) ?? nestedTheta ?? 10000
        if (try? c.decodeIfPresent(Bool.self, forKey: .useSlidingWindow)) == true {
            throw ModelConfigError.unsupported(key: "use_sliding_window", value: "true", expected: "false (sliding-window attention is not implemented)")
        }
        maxPositionEmbeddings = try c.decodeIfPresent(Int.self, forKey: .maxPositionEmbeddings) ?? 2048
        tieWordEmbeddings = try c.decodeIfPresent(Bool.self, forKey: .tieWordEmbeddings) ?? false
        initializerRange = try c.decodeIfPresent(Double.self, forKey: .initializerRange) ?? 0.02
        attentionBias = try c.decodeIfPresent(Bool.self, forKey: .attentionBias) ?? (modelType == "qwen2")
        if modelType == "qwen2" { attentionBias = true }
        hiddenAct = try c.decodeIfPresent(String.self, forKey: .hiddenAct) ?? "silu"
        bosTokenID = try? c.decodeIfPresent(Int.self, forKey: .bosTokenID)
        eosTokenID = try c.decodeIfPresent(TokenIDs.self, forKey: .eosTokenID)
        torchDtype = try c.decodeIfPresent(String.self, forKey: .torchDtype)
        if let scaling = try? c.decodeIfPresent([String: JSONScalar].self, forKey: .ropeScaling), !scaling.isEmpty {
            throw ModelConfigError.unsupported(key: "rope_scaling", value: "\(scaling.keys.sorted())",
                                               expected: "null (rope scaling is not implemented yet)")
        }
        if (try? c.decodeIfPresent(Bool.self, forKey: .mlpBias)) == true {
            throw ModelConfigError.unsupported(key: "mlp_bias", value: "true", expected: "false")
        }
    }

    public func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(architectures ?? [modelType == "qwen2" ? "Qwen2ForCausalLM" : "LlamaForCausalLM"], forKey: .architectures)
        try c.encode(modelType, forKey: .modelType)
        try c.encode(vocabSize, forKey: .vocabSize)
        try c.encode(hiddenSize, forKey: .hiddenSize)
        try c.encode(intermediateSize, forKey: .intermediateSize)
        try c.encode(numHiddenLayers, forKey: .numHiddenLayers)
        try c.encode(numAttentionHeads, forKey: .numAttentionHeads)
        try c.encode(numKeyValueHeads, forKey: .numKeyValueHeads)
        try c.encode(headDimension, forKey: .headDim)
        try c.encode(rmsNormEps, forKey: .rmsNormEps)
        try c.encode(ropeTheta, forKey: .ropeTheta)
        try c.encode(maxPositionEmbeddings, forKey: .maxPositionEmbeddings)
        try c.encode(tieWordEmbeddings, forKey: .tieWordEmbeddings)
        try c.encode(initializerRange, forKey: .initializerRange)
        if modelType != "qwen2" { try c.encode(attentionBias, forKey: .attentionBias) }
        try c.encode(hiddenAct, forKey: .hiddenAct)
        try c.encodeIfPresent(bosTokenID, forKey: .bosTokenID)
        try c.encodeIfPresent(eosTokenID, forKey: .eosTokenID)
        try c.encode("float32", forKey: .torchDtype)
    }

    /// Width of one attention head (`head_dim`, or `hidden_size / num_attention_heads`).
    public var headDimension: Int { headDim ?? hiddenSize / numAttentionHeads }
    public var usesQKVBias: Bool { attentionBias || modelType == "qwen2" }

    /// Checks the shapes fit together; the message names the key and what was expected.
    public func validate() throws {
        func require(_ ok: Bool, _ key: String, _ value: Any, _ expected: String) throws {
            if !ok { throw ModelConfigError.invalid(key: key, value: "\(value)", expected: expected) }
        }
        try require(["llama", "qwen2", "mistral"].contains(modelType), "model_type", modelType, "llama or qwen2")
        try require(vocabSize > 0, "vocab_size", vocabSize, "> 0")
        try require(hiddenSize > 0, "hidden_size", hiddenSize, "> 0")
        try require(intermediateSize > 0, "intermediate_size", intermediateSize, "> 0")
        try require(numHiddenLayers > 0, "num_hidden_layers", numHiddenLayers, "> 0")
        try require(numAttentionHeads > 0, "num_attention_heads", numAttentionHeads, "> 0")
        try require(numKeyValueHeads > 0 && numAttentionHeads % numKeyValueHeads == 0, "num_key_value_heads",
                    numKeyValueHeads, "a divisor of num_attention_heads (\(numAttentionHeads))")
        try require(headDim != nil || hiddenSize % numAttentionHeads == 0, "hidden_size", hiddenSize,
                    "a multiple of num_attention_heads (\(numAttentionHeads))")
        try require(headDimension % 2 == 0, "head_dim", headDimension, "an even number (rotary embedding)")
        try require(hiddenAct == "silu", "hidden_act", hiddenAct, "silu")
        try require(rmsNormEps > 0, "rms_norm_eps", rmsNormEps, "> 0")
    }

    /// Reads and validates an HF `config.json`.
    public static func load(from url: URL) throws -> ModelConfig {
        let data: Data
        do { data = try Data(contentsOf: url) } catch {
            throw ModelConfigError.unreadable(path: url.path, reason: FileOperation.reason(error))
        }
        let config: ModelConfig
        do { config = try JSONDecoder().decode(ModelConfig.self, from: data) } catch let error as ModelConfigError {
            throw ModelConfigError.inFile(path: url.path, error)
        } catch {
            throw ModelConfigError.malformed(path: url.path, reason: "\(error)")
        }
        do { try config.validate() } catch let error as ModelConfigError { throw ModelConfigError.inFile(path: url.path, error) }
        return config
    }

    /// The number of parameters (Ψ), without padding.
    public var parameterCount: Int { ParameterLayout(config: self).parameterCount }
}

/// A JSON scalar, for keys whose values we only need to inspect.
enum JSONScalar: Codable, Sendable {
    case number(Double), string(String), bool(Bool), null, other
    init(from decoder: Decoder) throws {
        let c = try decoder.singleValueContainer()
        if c.decodeNil() { self = .null }
        else if let b = try? c.decode(Bool.self) { self = .bool(b) }
        else if let d = try? c.decode(Double.self) { self = .number(d) }
        else if let s = try? c.decode(String.self) { self = .string(s) }
        else { self = .other }
    }
    func encode(to encoder: Encoder) throws {}
}

public enum ModelConfigError: Error, CustomStringConvertible {
    case unreadable(path: String, reason: String)
    case malformed(path: String, reason: String)
    case invalid(key: String, value: String, expected: String)
    case unsupported(key: String, value: String, expected: String)
    case unknownPreset(String, known: [String])
    indirect case inFile(path: String, ModelConfigError)

    public var description: String {
        switch self {
        case .unreadable(let path, let reason): "cannot read model config \(path): \(reason)"
        case .malformed(let path, let reason): "\(path): not a valid config.json: \(reason)"
        case .invalid(let key, let value, let expected): "config key \"\(key)\" is \(value), expected \(expected)"
        case .unsupported(let key, let value, let expected): "config key \"\(key)\" is \(value): unsupported, expected \(expected)"
        case .unknownPreset(let name, let known): "unknown model \"\(name)\": not a preset (\(known.joined(separator: ", "))), a config.json, a model directory or a .gguf file"
        case .inFile(let path, let error): "\(path): \(error)"
        }
    }
}
