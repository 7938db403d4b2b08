/// One parameter tensor inside its unit's flat buffer.
public struct ParameterTensor: Sendable, Equatable {
    /// The HF tensor name, e.g. `model.layers.3.self_attn.q_proj.weight`.
    public var name: String
    public var shape: [Int]
    /// First element within the unit's flat buffer.
    public var offset: Int
    public var count: Int { shape.reduce(1, *) }
    /// Whether AdamW decays it: matrices yes; norm weights and biases (1-D tensors) no.
    public var decays: Bool { shape.count >= 2 }
    public var range: Range<Int> { offset..<(offset + count) }
}

/// A group of parameters that is gathered, reduced and updated as one flat buffer.
public struct ParameterUnit: Sendable, Equatable {
    public enum Kind: Sendable, Equatable {
        case embedding
        case layer(Int)
        case final
    }
    public var kind: Kind
    public var tensors: [ParameterTensor]
    /// Elements, without padding.
    public var count: Int

    public var name: String {
        switch kind {
        case .embedding: "embedding"
        case .layer(let i): "layers.\(i)"
        case .final: "final"
        }
    }

    public func tensor(named name: String) -> ParameterTensor? { tensors.first { $0.name == name } }

    init(kind: Kind, shapes: [(String, [Int])]) {
        var offset = 0
        var tensors: [ParameterTensor] = []
        for (name, shape) in shapes {
            tensors.append(ParameterTensor(name: name, shape: shape, offset: offset))
            offset += shape.reduce(1, *)
        }
        self.kind = kind
        self.tensors = tensors
        self.count = offset
    }
}

/// The table of every parameter: units in use order (embedding, each layer, final norm and head),
/// tensors within a unit in HF's module order, each at an offset of the unit's flat buffer.
///
/// Parameters, gradients and AdamW moments all use this layout, so a ZeRO shard is a range of a
/// unit's buffer and loading, saving and sharding are walks over this table.
public struct ParameterLayout: Sendable, Equatable {
    public var units: [ParameterUnit]

    public init(config: ModelConfig) {
        let c = config.hiddenSize, f = config.intermediateSize, v = config.vocabSize
        let qWidth = config.numAttentionHeads * config.headDimension
        let kvWidth = config.numKeyValueHeads * config.headDimension
        var units = [ParameterUnit(kind: .embedding, shapes: [("model.embed_tokens.weight", [v, c])])]
        for i in 0..<config.numHiddenLayers {
            let p = "model.layers.\(i)."
            var shapes: [(String, [Int])] = [("\(p)input_layernorm.weight", [c]), ("\(p)self_attn.q_proj.weight", [qWidth, c])]
            if config.usesQKVBias { shapes.append(("\(p)self_attn.q_proj.bias", [qWidth])) }
            shapes.append(("\(p)self_attn.k_proj.weight", [kvWidth, c]))
            if config.usesQKVBias { shapes.append(("\(p)self_attn.k_proj.bias", [kvWidth])) }
            shapes.append(("\(p)self_attn.v_proj.weight", [kvWidth, c]))
            if config.usesQKVBias { shapes.append(("\(p)self_attn.v_proj.bias", [kvWidth])) }
            shapes += [("\(p)self_attn.o_proj.weight", [c, qWidth]),
                       ("\(p)post_attention_layernorm.weight", [c]),
                       ("\(p)mlp.gate_proj.weight", [f, c]),
                       ("\(p)mlp.up_proj.weight", [f, c]),
                       ("\(p)mlp.down_proj.weight", [c, f])]
            units.append(ParameterUnit(kind: .layer(i), shapes: shapes))
        }
        var final: [(String, [Int])] = [("model.norm.weight", [c])]
        if !config.tieWordEmbeddings { final.append(("lm_head.weight", [v, c])) }
        units.append(ParameterUnit(kind: .final, shapes: final))
        self.units = units
    }

    /// Ψ: every parameter, counted once (tied embeddings once).
    public var parameterCount: Int { units.reduce(0) { $0 + $1.count } }
    public var embeddingUnit: Int { 0 }
    public var finalUnit: Int { units.count - 1 }
    public func layerUnit(_ layer: Int) -> Int { 1 + layer }

    /// Every tensor with its unit index, in checkpoint order.
    public var allTensors: [(unit: Int, tensor: ParameterTensor)] {
        units.enumerated().flatMap { index, unit in unit.tensors.map { (index, $0) } }
    }
}
