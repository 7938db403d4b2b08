import Foundation

/// The architecture of a decoder-only model, with HF `config.json` key names.
///
/// Covers `LlamaForCausalLM` (SmolLM2, Llama 2/3), `MistralForCausalLM` (sliding window) and
/// `Qwen2ForCausalLM` (q/k/v biases). `init(from:)` reads `config.json` the way transformers 5 builds
/// `LlamaConfig` / `MistralConfig` / `Qwen2Config` (defaults per model type, `rope_parameters` over
/// `rope_scaling` over `rope_theta`; see docs/config.md), and refuses every key that changes the math
/// and is not implemented.
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
    /// The RoPE base (`rope_parameters.rope_theta`, else `rope_theta`, else 10000).
    public var ropeTheta: Double
    /// The RoPE scaling (`rope_parameters` / `rope_scaling` with a `rope_type` other than `default`), or nil.
    public var ropeScaling: RopeScaling?
    public var maxPositionEmbeddings: Int
    public var tieWordEmbeddings: Bool
    public var initializerRange: Double
    public var attentionBias: Bool
    public var hiddenAct: String
    public var bosTokenID: Int?
    public var eosTokenID: TokenIDs?
    public var torchDtype: String?
    /// Keys each query attends to in every layer (Mistral's `sliding_window`; Qwen2's when
    /// `use_sliding_window` makes every layer sliding), or nil for full causal attention.
    public var slidingWindow: Int?

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
        case partialRotaryFactor = "partial_rotary_factor"
        case originalMaxPositionEmbeddings = "original_max_position_embeddings"
        case useSlidingWindow = "use_sliding_window"
        case slidingWindow = "sliding_window"
        case maxWindowLayers = "max_window_layers"
        case layerTypes = "layer_types"
        case attentionDropout = "attention_dropout"
    }

    public init(
        modelType: String = "llama", vocabSize: Int, hiddenSize: Int, intermediateSize: Int,
        numHiddenLayers: Int, numAttentionHeads: Int, numKeyValueHeads: Int, headDim: Int? = nil,
        rmsNormEps: Double = 1e-5, ropeTheta: Double = 10000, maxPositionEmbeddings: Int = 2048,
        tieWordEmbeddings: Bool = true, initializerRange: Double = 0.02, attentionBias: Bool = false,
        bosTokenID: Int? = nil, eosTokenID: Int? = nil, ropeScaling: RopeScaling? = nil, slidingWindow: Int? = nil
    ) {
        self.architectures = [Self.architecture(of: modelType)]
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
        self.ropeScaling = ropeScaling
        self.maxPositionEmbeddings = maxPositionEmbeddings
        self.tieWordEmbeddings = tieWordEmbeddings
        self.initializerRange = initializerRange
        self.attentionBias = attentionBias
        self.hiddenAct = "silu"
        self.bosTokenID = bosTokenID
        self.eosTokenID = eosTokenID.map { .one($0) }
        self.torchDtype = "float32"
        self.slidingWindow = slidingWindow
    }

    static func architecture(of modelType: String) -> String {
        switch modelType {
        case "qwen2": "Qwen2ForCausalLM"
        case "mistral": "MistralForCausalLM"
        default: "LlamaForCausalLM"
        }
    }

    /// Reads `config.json` as transformers 5.24 does (`LlamaConfig`, `MistralConfig`, `Qwen2Config` and
    /// `RotaryEmbeddingConfigMixin.convert_rope_params_to_dict` / `standardize_rope_params`):
    /// - `num_key_value_heads`: absent → llama: `num_attention_heads`, qwen2: 32, mistral: 8; null → `num_attention_heads`;
    /// - `max_position_embeddings`: absent → llama 2048, qwen2 32768, mistral 131072; `rms_norm_eps` absent → 1e-6;
    /// - `head_dim`: absent or null → `hidden_size / num_attention_heads`; `tie_word_embeddings` absent → false;
    /// - RoPE: the dict is `rope_scaling` if it is a non-empty object, else `rope_parameters`; its
    ///   `rope_theta` wins over the top-level `rope_theta` (default 10000); `rope_type` wins over `type`;
    ///   `original_max_position_embeddings`: top-level key, else the dict's, else `max_position_embeddings`;
    /// - biases: qwen2 always has q/k/v biases, mistral never; llama reads `attention_bias` (which also
    ///   gives `o_proj` a bias: refused) and `mlp_bias` (refused);
    /// - sliding window: mistral reads `sliding_window` (absent → 4096, null → none); qwen2 only when
    ///   `use_sliding_window`, for layers `i ≥ max_window_layers` (or as `layer_types` lists); llama never.
    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        /// What a key of `type` holds, in JSON's words ("an integer", not the Swift type's name).
        func kind<T>(_ type: T.Type) -> String {
            switch type {
            case is Int.Type: "an integer"
            case is Double.Type: "a number"
            case is Bool.Type: "true or false"
            case is String.Type: "a string"
            case is [String].Type: "a list of strings"
            default: "a \(type)"
            }
        }
        /// A key present with a value of the wrong type is an error naming it (not silently the default).
        func optional<T: Decodable>(_ type: T.Type, _ key: CodingKeys) throws -> T? {
            do { return try c.decodeIfPresent(type, forKey: key) } catch {
                throw ModelConfigError.invalid(key: key.rawValue, value: "\((try? c.decode(JSONScalar.self, forKey: key)).map { "\($0)" } ?? "of another type")",
                                               expected: kind(type))
            }
        }
        func required<T: Decodable>(_ type: T.Type, _ key: CodingKeys) throws -> T {
            guard let value = try optional(type, key) else {
                throw ModelConfigError.invalid(key: key.rawValue, value: "missing", expected: kind(type))
            }
            return value
        }
        architectures = try? c.decodeIfPresent([String].self, forKey: .architectures)
        modelType = try optional(String.self, .modelType) ?? "llama"
        vocabSize = try required(Int.self, .vocabSize)
        hiddenSize = try required(Int.self, .hiddenSize)
        intermediateSize = try required(Int.self, .intermediateSize)
        numHiddenLayers = try required(Int.self, .numHiddenLayers)
        numAttentionHeads = try required(Int.self, .numAttentionHeads)
        if c.contains(.numKeyValueHeads) {
            numKeyValueHeads = try optional(Int.self, .numKeyValueHeads) ?? numAttentionHeads
        } else {
            numKeyValueHeads = switch modelType { case "qwen2": 32; case "mistral": 8; default: numAttentionHeads }
        }
        headDim = try optional(Int.self, .headDim)
        rmsNormEps = try optional(Double.self, .rmsNormEps) ?? 1e-6
        let defaultMaxPositions = switch modelType { case "qwen2": 32768; case "mistral": 131_072; default: 2048 }
        maxPositionEmbeddings = try optional(Int.self, .maxPositionEmbeddings) ?? defaultMaxPositions
        tieWordEmbeddings = try optional(Bool.self, .tieWordEmbeddings) ?? false
        initializerRange = try optional(Double.self, .initializerRange) ?? 0.02
        hiddenAct = try optional(String.self, .hiddenAct) ?? "silu"
        bosTokenID = try? c.decodeIfPresent(Int.self, forKey: .bosTokenID)
        eosTokenID = try? c.decodeIfPresent(TokenIDs.self, forKey: .eosTokenID)
        torchDtype = try? c.decodeIfPresent(String.self, forKey: .torchDtype)

        // Biases.
        switch modelType {
        case "qwen2": attentionBias = true
        case "mistral": attentionBias = false
        default:
            attentionBias = try optional(Bool.self, .attentionBias) ?? false
            if attentionBias {
                throw ModelConfigError.unsupported(key: "attention_bias", value: "true",
                                                   expected: "false (Llama's attention_bias also adds an o_proj bias, which is not implemented)")
            }
            if try optional(Bool.self, .mlpBias) == true {
                throw ModelConfigError.unsupported(key: "mlp_bias", value: "true", expected: "false (MLP biases are not implemented)")
            }
        }
        if let dropout = try optional(Double.self, .attentionDropout), dropout != 0 {
            throw ModelConfigError.unsupported(key: "attention_dropout", value: "\(dropout)", expected: "0 (attention dropout is not implemented)")
        }

        // RoPE: `rope_scaling or rope_parameters`, the dict's own rope_theta first.
        var dictionary: [String: JSONScalar]? = nil
        var dictionaryKey = "rope_parameters"
        for key in [CodingKeys.ropeScaling, .ropeParameters] where c.contains(key) {
            if try c.decodeNil(forKey: key) { continue }
            guard let value = try? c.decode([String: JSONScalar].self, forKey: key) else {
                throw ModelConfigError.unsupported(key: key.rawValue, value: "not a flat object",
                                                   expected: "an object of numbers and strings (per-layer-type RoPE is not implemented)")
            }
            if value.isEmpty { continue }
            dictionary = value
            dictionaryKey = key.rawValue
            break
        }
        let rope = dictionary ?? [:]
        let nestedTheta = try rope.number("rope_theta", in: dictionaryKey)
        ropeTheta = try nestedTheta ?? optional(Double.self, .ropeTheta) ?? 10000
        guard ropeTheta.isFinite, ropeTheta > 1 else {
            throw ModelConfigError.invalid(key: nestedTheta == nil ? "rope_theta" : "\(dictionaryKey).rope_theta",
                                           value: "\(ropeTheta)", expected: "a finite number > 1")
        }
        let partial = try rope.number("partial_rotary_factor", in: dictionaryKey) ?? optional(Double.self, .partialRotaryFactor)
        if let partial, partial != 1 {
            throw ModelConfigError.unsupported(key: "partial_rotary_factor", value: "\(partial)", expected: "1 (partial rotary is not implemented)")
        }
        let type = try rope.string("rope_type", in: dictionaryKey) ?? rope.string("type", in: dictionaryKey) ?? "default"
        let originalMax = try optional(Int.self, .originalMaxPositionEmbeddings)
            ?? rope.integer("original_max_position_embeddings", in: dictionaryKey)
        ropeScaling = try RopeScaling(type: type, parameters: rope, in: dictionaryKey,
                                      originalMaxPositionEmbeddings: originalMax)

        // Sliding window.
        switch modelType {
        case "mistral":
            slidingWindow = c.contains(.slidingWindow) ? try optional(Int.self, .slidingWindow) : 4096
        case "qwen2":
            // Qwen2Config.__post_init__: sliding_window (absent: 4096) only if use_sliding_window; layer i
            // slides if i ≥ max_window_layers (absent: 28), unless layer_types lists the kinds.
            var window: Int? = nil
            if try optional(Bool.self, .useSlidingWindow) == true {
                window = c.contains(.slidingWindow) ? try optional(Int.self, .slidingWindow) : 4096
            }
            let layerTypes: [String]
            if let listed = try optional([String].self, .layerTypes) {
                guard listed.count == numHiddenLayers else {
                    throw ModelConfigError.invalid(key: "layer_types", value: "\(listed.count) entries",
                                                   expected: "one per layer (num_hidden_layers \(numHiddenLayers))")
                }
                layerTypes = listed
            } else {
                let first = try optional(Int.self, .maxWindowLayers) ?? 28
                layerTypes = (0..<max(0, min(numHiddenLayers, 1 << 16))).map { window != nil && $0 >= first ? "sliding_attention" : "full_attention" }
            }
            let kinds = Set(layerTypes)
            guard kinds.isSubset(of: ["sliding_attention", "full_attention"]) else {
                throw ModelConfigError.unsupported(key: "layer_types", value: "\(kinds.sorted())", expected: "sliding_attention or full_attention")
            }
            let sliding = window == nil ? 0 : layerTypes.filter { $0 == "sliding_attention" }.count
            if sliding != 0 && sliding != layerTypes.count {
                throw ModelConfigError.unsupported(
                    key: "max_window_layers", value: "sliding attention in \(sliding) of \(layerTypes.count) layers",
                    expected: "every layer or none (use_sliding_window false, or max_window_layers 0 or ≥ num_hidden_layers): mixed layers are not implemented")
            }
            slidingWindow = sliding == 0 ? nil : window
        default:
            slidingWindow = nil
        }
    }

    /// Writes the config so that transformers (4.x and 5) reads back the same model: `rope_theta` and,
    /// when scaled, `rope_scaling` (with `rope_type` and `type`); `sliding_window` for mistral (null when
    /// none, since absent means 4096) and `use_sliding_window` / `max_window_layers` for qwen2.
    public func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(architectures ?? [Self.architecture(of: modelType)], forKey: .architectures)
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
        if let ropeScaling { try c.encode(ropeScaling, forKey: .ropeScaling) }
        try c.encode(maxPositionEmbeddings, forKey: .maxPositionEmbeddings)
        try c.encode(tieWordEmbeddings, forKey: .tieWordEmbeddings)
        try c.encode(initializerRange, forKey: .initializerRange)
        if modelType == "llama" { try c.encode(attentionBias, forKey: .attentionBias) }
        switch modelType {
        case "mistral": try c.encode(slidingWindow, forKey: .slidingWindow)
        case "qwen2":
            try c.encode(slidingWindow != nil, forKey: .useSlidingWindow)
            if let slidingWindow {
                try c.encode(slidingWindow, forKey: .slidingWindow)
                try c.encode(0, forKey: .maxWindowLayers)
            }
        default: break
        }
        try c.encode(hiddenAct, forKey: .hiddenAct)
        try c.encodeIfPresent(bosTokenID, forKey: .bosTokenID)
        try c.encodeIfPresent(eosTokenID, forKey: .eosTokenID)
        try c.encode("float32", forKey: .torchDtype)
    }

    /// Width of one attention head (`head_dim`, or `hidden_size / num_attention_heads`).
    public var headDimension: Int { headDim ?? hiddenSize / max(numAttentionHeads, 1) }
    public var usesQKVBias: Bool { attentionBias || modelType == "qwen2" }

    /// Upper bounds no real decoder reaches (the largest public ones are about 1/10 of each), so that a
    /// flipped byte or a typo is refused before anything is sized from it.
    public static let bounds: [(key: String, limit: Int)] = [
        ("vocab_size", 1 << 22), ("hidden_size", 1 << 17), ("intermediate_size", 1 << 19),
        ("num_hidden_layers", 1 << 10), ("num_attention_heads", 1 << 10), ("head_dim", 1 << 12),
        ("max_position_embeddings", 1 << 27),
    ]
    /// The most parameters a config may describe (2^40, about 1.1 trillion).
    public static let maximumParameters = 1 << 40

    /// Checks the shapes fit together and lie within ``bounds``, before anything is allocated from them;
    /// the message names the key and what was expected.
    public func validate() throws {
        func require(_ ok: Bool, _ key: String, _ value: Any, _ expected: String) throws {
            if !ok { throw ModelConfigError.invalid(key: key, value: "\(value)", expected: expected) }
        }
        try require(["llama", "qwen2", "mistral"].contains(modelType), "model_type", modelType, "llama, mistral or qwen2")
        let values: [String: Int] = [
            "vocab_size": vocabSize, "hidden_size": hiddenSize, "intermediate_size": intermediateSize,
            "num_hidden_layers": numHiddenLayers, "num_attention_heads": numAttentionHeads, "head_dim": headDim ?? 2,
            "max_position_embeddings": maxPositionEmbeddings,
        ]
        for (key, limit) in Self.bounds {
            let value = values[key]!
            try require(value > 0 && value <= limit, key, value, "between 1 and \(limit)")
        }
        try require(numKeyValueHeads > 0 && numAttentionHeads % numKeyValueHeads == 0, "num_key_value_heads",
                    numKeyValueHeads, "a divisor of num_attention_heads (\(numAttentionHeads))")
        // LlamaConfig.validate_architecture refuses this even with head_dim set.
        try require((headDim != nil && modelType != "llama") || hiddenSize % numAttentionHeads == 0, "hidden_size", hiddenSize,
                    "a multiple of num_attention_heads (\(numAttentionHeads))")
        try require(headDimension > 0 && headDimension % 2 == 0, "head_dim", headDimension, "a positive even number (rotary embedding)")
        try require(numAttentionHeads * headDimension <= 1 << 18, "head_dim", headDimension,
                    "at most \((1 << 18) / numAttentionHeads) (num_attention_heads × head_dim ≤ 2^18)")
        try require(hiddenAct == "silu", "hidden_act", hiddenAct, "silu")
        try require(rmsNormEps > 0 && rmsNormEps.isFinite, "rms_norm_eps", rmsNormEps, "a finite number > 0")
        try require(ropeTheta > 1 && ropeTheta.isFinite, "rope_theta", ropeTheta, "a finite number > 1")
        if let slidingWindow { try require(slidingWindow > 0, "sliding_window", slidingWindow, "a positive integer or null") }
        if let ropeScaling { try ropeScaling.validate(maxPositionEmbeddings: maxPositionEmbeddings) }
        // Every size below is a product of bounded values, but their sum over layers may not fit Int.
        var total = 0
        for term in Self.parameterTerms(self) {
            let (sum, overflow) = total.addingReportingOverflow(term)
            try require(!overflow && sum <= Self.maximumParameters, "num_hidden_layers", numHiddenLayers,
                        "a model of at most 2^40 parameters")
            total = sum
        }
    }

    /// Parameter counts per part (embedding, head, layers), each bounded by ``bounds`` so products fit Int.
    private static func parameterTerms(_ config: ModelConfig) -> [Int] {
        let c = config.hiddenSize, f = config.intermediateSize, d = config.headDimension
        let qw = config.numAttentionHeads * d, kw = config.numKeyValueHeads * d
        let layer = 2 * c + c * qw + 2 * c * kw + qw * c + 3 * c * f + (config.usesQKVBias ? qw + 2 * kw : 0)
        let (layers, overflow) = layer.multipliedReportingOverflow(by: config.numHiddenLayers)
        return [config.vocabSize * c, config.tieWordEmbeddings ? 0 : config.vocabSize * c, c, overflow ? Int.max : layers]
    }

    /// Checks `num_hidden_layers` against the tensors a checkpoint holds (HF names), before a layout is
    /// built from it: it may not claim more layers than `model.layers.N` groups are stored (a flipped byte
    /// or a wrong config.json would build a huge layout). Fewer leaves stored tensors no layer uses,
    /// which the weights check lists by name.
    public func checkLayers(against tensorNames: some Collection<String>, location: String) throws {
        var present = Set<Int>()
        for name in tensorNames where name.hasPrefix("model.layers.") {
            if let index = Int(name.dropFirst("model.layers.".count).prefix { $0 != "." }) { present.insert(index) }
        }
        guard numHiddenLayers <= present.count else {
            throw ModelConfigError.inFile(path: location, .invalid(
                key: "num_hidden_layers", value: "\(numHiddenLayers)",
                expected: "the number of layers the checkpoint holds (\(present.count) present, indices up to \(present.max() ?? -1))"))
        }
    }

    /// The number of parameters (Ψ), without padding.
    public var parameterCount: Int { ParameterLayout(config: self).parameterCount }
}

/// RoPE scaling as transformers 5 computes its `inv_freq` (`modeling_rope_utils.ROPE_INIT_FUNCTIONS`).
///
/// Read from `rope_parameters` / `rope_scaling`; the frequencies are ``ModelConfig/rotaryFrequencies(sequenceLength:)``.
public struct RopeScaling: Codable, Sendable, Equatable {
    public enum Kind: String, Codable, Sendable, CaseIterable {
        /// Position interpolation: `θᵢ / factor`.
        case linear
        /// Dynamic NTK: the base grows with the sequence length past `max_position_embeddings`.
        case dynamic
        /// YaRN (Peng et al. 2023): a ramp between interpolated and original frequencies, and cos/sin × attention factor.
        case yarn
        /// Llama 3.1: low frequencies / factor, high ones kept, a smooth ramp between.
        case llama3
    }
    public var type: Kind
    public var factor: Double?
    public var originalMaxPositionEmbeddings: Int?
    public var lowFreqFactor: Double?
    public var highFreqFactor: Double?
    public var attentionFactor: Double?
    public var betaFast: Double?
    public var betaSlow: Double?
    public var mscale: Double?
    public var mscaleAllDim: Double?
    public var truncate: Bool?

    public init(type: Kind, factor: Double? = nil, originalMaxPositionEmbeddings: Int? = nil, lowFreqFactor: Double? = nil,
                highFreqFactor: Double? = nil, attentionFactor: Double? = nil, betaFast: Double? = nil, betaSlow: Double? = nil,
                mscale: Double? = nil, mscaleAllDim: Double? = nil, truncate: Bool? = nil) {
        self.type = type
        self.factor = factor
        self.originalMaxPositionEmbeddings = originalMaxPositionEmbeddings
        self.lowFreqFactor = lowFreqFactor
        self.highFreqFactor = highFreqFactor
        self.attentionFactor = attentionFactor
        self.betaFast = betaFast
        self.betaSlow = betaSlow
        self.mscale = mscale
        self.mscaleAllDim = mscaleAllDim
        self.truncate = truncate
    }

    enum CodingKeys: String, CodingKey {
        case type = "rope_type", legacyType = "type", factor
        case originalMaxPositionEmbeddings = "original_max_position_embeddings"
        case lowFreqFactor = "low_freq_factor", highFreqFactor = "high_freq_factor", attentionFactor = "attention_factor"
        case betaFast = "beta_fast", betaSlow = "beta_slow", mscale, mscaleAllDim = "mscale_all_dim", truncate
    }

    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        let kind = try c.decodeIfPresent(Kind.self, forKey: .type) ?? c.decode(Kind.self, forKey: .legacyType)
        self.init(type: kind, factor: try c.decodeIfPresent(Double.self, forKey: .factor),
                  originalMaxPositionEmbeddings: try c.decodeIfPresent(Int.self, forKey: .originalMaxPositionEmbeddings),
                  lowFreqFactor: try c.decodeIfPresent(Double.self, forKey: .lowFreqFactor),
                  highFreqFactor: try c.decodeIfPresent(Double.self, forKey: .highFreqFactor),
                  attentionFactor: try c.decodeIfPresent(Double.self, forKey: .attentionFactor),
                  betaFast: try c.decodeIfPresent(Double.self, forKey: .betaFast), betaSlow: try c.decodeIfPresent(Double.self, forKey: .betaSlow),
                  mscale: try c.decodeIfPresent(Double.self, forKey: .mscale), mscaleAllDim: try c.decodeIfPresent(Double.self, forKey: .mscaleAllDim),
                  truncate: try c.decodeIfPresent(Bool.self, forKey: .truncate))
    }

    /// `rope_type` and the legacy `type` (transformers 4.3x reads `type`), then the parameters that are set.
    public func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(type, forKey: .type)
        try c.encode(type, forKey: .legacyType)
        try c.encodeIfPresent(factor, forKey: .factor)
        try c.encodeIfPresent(originalMaxPositionEmbeddings, forKey: .originalMaxPositionEmbeddings)
        try c.encodeIfPresent(lowFreqFactor, forKey: .lowFreqFactor)
        try c.encodeIfPresent(highFreqFactor, forKey: .highFreqFactor)
        try c.encodeIfPresent(attentionFactor, forKey: .attentionFactor)
        try c.encodeIfPresent(betaFast, forKey: .betaFast)
        try c.encodeIfPresent(betaSlow, forKey: .betaSlow)
        try c.encodeIfPresent(mscale, forKey: .mscale)
        try c.encodeIfPresent(mscaleAllDim, forKey: .mscaleAllDim)
        try c.encodeIfPresent(truncate, forKey: .truncate)
    }

    /// From a `rope_parameters` dict: nil for `default`; an error naming `key.rope_type` for types we do not implement.
    init?(type: String, parameters p: [String: JSONScalar], in key: String, originalMaxPositionEmbeddings: Int?) throws {
        if type == "default" { return nil }
        guard let kind = Kind(rawValue: type) else {
            throw ModelConfigError.unsupported(key: "\(key).rope_type", value: "\"\(type)\"",
                                               expected: "default, \(Kind.allCases.map(\.rawValue).joined(separator: ", ")) (\(type) is not implemented)")
        }
        self.init(type: kind, factor: try p.number("factor", in: key), originalMaxPositionEmbeddings: originalMaxPositionEmbeddings,
                  lowFreqFactor: try p.number("low_freq_factor", in: key), highFreqFactor: try p.number("high_freq_factor", in: key),
                  attentionFactor: try p.number("attention_factor", in: key), betaFast: try p.number("beta_fast", in: key),
                  betaSlow: try p.number("beta_slow", in: key), mscale: try p.number("mscale", in: key),
                  mscaleAllDim: try p.number("mscale_all_dim", in: key), truncate: try p.bool("truncate", in: key))
        if kind == .linear || kind == .dynamic { self.originalMaxPositionEmbeddings = nil }
    }

    /// The keys each type needs, with their ranges (transformers raises a KeyError or divides by zero without them).
    func validate(maxPositionEmbeddings: Int) throws {
        func require(_ ok: Bool, _ name: String, _ value: Any?, _ expected: String) throws {
            if !ok { throw ModelConfigError.invalid(key: "rope_parameters.\(name)", value: value.map { "\($0)" } ?? "missing",
                                                    expected: "\(expected) (rope_type \(type.rawValue))") }
        }
        func positive(_ value: Double?) -> Bool { value.map { $0.isFinite && $0 > 0 } ?? false }
        switch type {
        case .linear, .dynamic:
            try require(positive(factor), "factor", factor, "a finite number > 0")
        case .llama3:
            try require(positive(factor), "factor", factor, "a finite number > 0")
            try require(positive(lowFreqFactor), "low_freq_factor", lowFreqFactor, "a finite number > 0")
            try require(positive(highFreqFactor) && highFreqFactor != lowFreqFactor, "high_freq_factor", highFreqFactor,
                        "a finite number > 0, not equal to low_freq_factor")
        case .yarn:
            try require(positive(factor), "factor", factor, "a finite number > 0 (transformers requires it)")
            if let attentionFactor { try require(attentionFactor.isFinite && attentionFactor >= 0, "attention_factor", attentionFactor, "a finite number ≥ 0") }
            for (name, value) in [("beta_fast", betaFast), ("beta_slow", betaSlow), ("mscale", mscale), ("mscale_all_dim", mscaleAllDim)] {
                if let value { try require(value.isFinite, name, value, "a finite number") }
            }
        }
        if type == .llama3 || type == .yarn {
            let original = originalMaxPositionEmbeddings ?? maxPositionEmbeddings
            try require(original > 0 && original <= 1 << 27, "original_max_position_embeddings", original, "between 1 and 2^27")
        }
    }
}

/// A JSON scalar, for keys whose values we only need to inspect.
enum JSONScalar: Codable, Sendable, CustomStringConvertible {
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
    var description: String {
        switch self {
        case .number(let d): "\(d)"
        case .string(let s): "\"\(s)\""
        case .bool(let b): "\(b)"
        case .null: "null"
        case .other: "an array or object"
        }
    }
}

extension [String: JSONScalar] {
    /// `self[name]` as a number; nil when absent or null; an error naming `key.name` for another type.
    func number(_ name: String, in key: String) throws -> Double? {
        switch self[name] {
        case nil, .null?: return nil
        case .number(let value)?: return value
        case let other?: throw ModelConfigError.invalid(key: "\(key).\(name)", value: "\(other)", expected: "a number")
        }
    }
    func integer(_ name: String, in key: String) throws -> Int? {
        guard let value = try number(name, in: key) else { return nil }
        guard value.rounded() == value, abs(value) < 1e15 else {
            throw ModelConfigError.invalid(key: "\(key).\(name)", value: "\(value)", expected: "an integer")
        }
        return Int(value)
    }
    func string(_ name: String, in key: String) throws -> String? {
        switch self[name] {
        case nil, .null?: return nil
        case .string(let value)?: return value
        case let other?: throw ModelConfigError.invalid(key: "\(key).\(name)", value: "\(other)", expected: "a string")
        }
    }
    func bool(_ name: String, in key: String) throws -> Bool? {
        switch self[name] {
        case nil, .null?: return nil
        case .bool(let value)?: return value
        case let other?: throw ModelConfigError.invalid(key: "\(key).\(name)", value: "\(other)", expected: "true or false")
        }
    }
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
