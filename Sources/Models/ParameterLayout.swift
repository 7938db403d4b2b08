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

/// Where each tensor of a decoder layer sits in its layer unit's flat buffer: the same for every
/// layer, built by ``ParameterLayout`` while it lays the layer out (no lookup by name).
public struct LayerTensors: Sendable, Equatable {
    public var inputNorm: Range<Int>
    public var q: Range<Int>, qBias: Range<Int>?
    public var k: Range<Int>, kBias: Range<Int>?
    public var v: Range<Int>, vBias: Range<Int>?
    public var o: Range<Int>
    public var postNorm: Range<Int>
    public var gate: Range<Int>, up: Range<Int>, down: Range<Int>
}

/// The table of every parameter: units in use order (embedding, each layer, final norm and head),
/// tensors within a unit in HF's module order, each at an offset of the unit's flat buffer.
///
/// Parameters, gradients and AdamW moments all use this layout, so a ZeRO shard is a range of a
/// unit's buffer and loading, saving and sharding are walks over this table.
public struct ParameterLayout: Sendable, Equatable {
    public var units: [ParameterUnit]
    /// The offsets of q, k, v, o, gate, up, down, the norms and biases inside every layer unit.
    public var layer: LayerTensors

    public init(config: ModelConfig) {
        let c = config.hiddenSize, f = config.intermediateSize, v = config.vocabSize
        let qWidth = config.numAttentionHeads * config.headDimension
        let kvWidth = config.numKeyValueHeads * config.headDimension
        var units = [ParameterUnit(kind: .embedding, shapes: [("model.embed_tokens.weight", [v, c])])]
        // One layer's tensors in HF module order; `place` returns each one's range as it is laid out.
        var shapes: [(String, [Int])] = [], offset = 0
        func place(_ name: String, _ shape: [Int]) -> Range<Int> {
            shapes.append((name, shape))
            offset += shape.reduce(1, *)
            return (offset - shape.reduce(1, *))..<offset
        }
        let bias = config.usesQKVBias
        let inputNorm = place("input_layernorm.weight", [c])
        let q = place("self_attn.q_proj.weight", [qWidth, c]), qBias = bias ? place("self_attn.q_proj.bias", [qWidth]) : nil
        let k = place("self_attn.k_proj.weight", [kvWidth, c]), kBias = bias ? place("self_attn.k_proj.bias", [kvWidth]) : nil
        let vw = place("self_attn.v_proj.weight", [kvWidth, c]), vBias = bias ? place("self_attn.v_proj.bias", [kvWidth]) : nil
        let o = place("self_attn.o_proj.weight", [c, qWidth])
        let postNorm = place("post_attention_layernorm.weight", [c])
        let gate = place("mlp.gate_proj.weight", [f, c]), up = place("mlp.up_proj.weight", [f, c])
        let down = place("mlp.down_proj.weight", [c, f])
        layer = LayerTensors(inputNorm: inputNorm, q: q, qBias: qBias, k: k, kBias: kBias, v: vw, vBias: vBias,
                             o: o, postNorm: postNorm, gate: gate, up: up, down: down)
        for i in 0..<config.numHiddenLayers {
            units.append(ParameterUnit(kind: .layer(i), shapes: shapes.map { ("model.layers.\(i).\($0.0)", $0.1) }))
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
