import Kernels

/// Where the model gets each unit's full parameters and where it accumulates their gradients.
///
/// The ZeRO engine implements it: at stage 3 `parameters` gathers the unit from every rank's shard
/// and `releaseParameters` frees it; at stages 2–3 `releaseGradients` reduce-scatters the unit's
/// gradient. Calls follow ``DecoderModel/parameterSchedule(training:)`` exactly, so an implementation
/// can prefetch the next unit.
public protocol UnitStore: AnyObject {
    func parameters(unit: Int) throws -> UnsafeBufferPointer<Float>
    func releaseParameters(unit: Int) throws
    /// A full-size buffer of the unit's gradient to accumulate into (`+=`).
    func gradients(unit: Int) throws -> UnsafeMutableBufferPointer<Float>
    func releaseGradients(unit: Int) throws
}

/// A forward value that is NaN or infinite (checked after every layer in debug mode).
public struct NonFiniteValueError: Error, CustomStringConvertible {
    public var location: String
    public var index: Int
    public var value: Float
    public var description: String { "non-finite value \(value) in \(location) at element \(index)" }
}

/// A Llama / Qwen2 decoder: forward and backward over a packed ``TokenBatch``.
///
/// The forward is a list of layer calls and the backward is the same list reversed (llm.c style);
/// every backward accumulates into the gradient buffers the ``UnitStore`` hands out.
public final class DecoderModel {
    public let config: ModelConfig
    public let layout: ParameterLayout
    public private(set) var rotary: RotaryTable
    /// Tokens one micro-batch may hold: activations are allocated for this many.
    public let maxTokens: Int
    /// Check every layer's output for NaN/Inf and throw, naming the layer.
    public var checkFinite = false

    let shape: Attention.Shape
    let layerTensors: [LayerTensors]
    let activations: Activations

    public init(config: ModelConfig, maxTokens: Int) {
        self.config = config
        self.layout = ParameterLayout(config: config)
        self.maxTokens = maxTokens
        self.rotary = config.rotaryTable(positions: max(maxTokens, 1))
        self.shape = Attention.Shape(queryHeads: config.numAttentionHeads, keyValueHeads: config.numKeyValueHeads,
                                     headDimension: config.headDimension, window: config.slidingWindow)
        self.layerTensors = (0..<config.numHiddenLayers).map { LayerTensors(unit: ParameterLayout(config: config).units[1 + $0]) }
        self.activations = Activations(config: config, maxTokens: maxTokens)
    }

    /// Bytes held for activations (cached per layer for the backward) and scratch.
    public var activationBytes: Int { activations.bytes }

    /// The order in which one micro-step asks for units' parameters.
    ///
    /// Forward: embedding, each layer, final (and the embedding again as the tied head); backward:
    /// each layer in reverse (the final unit's backward happens while it is still held).
    public func parameterSchedule(training: Bool) -> [Int] {
        var order = [layout.embeddingUnit] + (0..<config.numHiddenLayers).map(layout.layerUnit) + [layout.finalUnit]
        if config.tieWordEmbeddings { order.append(layout.embeddingUnit) }
        if training { order += (0..<config.numHiddenLayers).reversed().map(layout.layerUnit) }
        return order
    }

    /// Runs the forward and, when `training`, the backward of one micro-batch.
    ///
    /// `lossScale` multiplies the gradient of the summed loss: 1 / (supervised tokens in the whole
    /// optimizer step, over all ranks and micro-batches). Returns the summed NLL and its token count.
    @discardableResult
    public func step(_ batch: TokenBatch, store: UnitStore, lossScale: Float, training: Bool) throws -> Classifier.Result {
        let n = batch.count
        precondition(n <= maxTokens, "DecoderModel.step: \(n) tokens exceed the \(maxTokens) allocated for")
        precondition(batch.longestExample <= rotary.maxPositions, "DecoderModel.step: example longer than the rotary table")
        if config.rotaryDependsOnLength { rotary = config.rotaryTable(positions: rotary.maxPositions, sequenceLength: batch.longestExample) }
        let c = config.hiddenSize, v = config.vocabSize, a = activations
        let embeddingUnit = layout.embeddingUnit, finalUnit = layout.finalUnit

        return try batch.tokens.withUnsafeBufferPointer { tokens in
            try batch.positions.withUnsafeBufferPointer { positions in
                try batch.targets.withUnsafeBufferPointer { targets in
                    // Forward.
                    let embedding = try store.parameters(unit: embeddingUnit).view(0..<(v * c))
                    Embedding.forward(out: a.layerInput[0].pointer, tokens: tokens, weight: embedding, vocabulary: v, channels: c)
                    try store.releaseParameters(unit: embeddingUnit)
                    try check(a.layerInput[0], n * c, "embedding output")
                    for l in 0..<config.numHiddenLayers {
                        let unit = layout.layerUnit(l)
                        let weights = try store.parameters(unit: unit)
                        layerForward(l, weights: weights, positions: positions, boundaries: batch.boundaries, tokens: n)
                        try store.releaseParameters(unit: unit)
                        try check(a.layerInput[l + 1], n * c, "layer \(l) output")
                    }
                    let final = try store.parameters(unit: finalUnit)
                    let normWeight = final.view(0..<c)
                    RMSNorm.forward(out: a.normed.pointer, rstd: a.finalRstd.pointer, inp: a.layerInput.last!.prefix(n * c),
                                    weight: normWeight, tokens: n, channels: c, epsilon: Float(config.rmsNormEps))
                    // Output projection and loss (fused with their backward).
                    let headWeight: UnsafeBufferPointer<Float>
                    let headUnit = config.tieWordEmbeddings ? embeddingUnit : finalUnit
                    headWeight = config.tieWordEmbeddings ? try store.parameters(unit: embeddingUnit).view(0..<(v * c))
                                                            : final.view(c..<(c + v * c))
                    var finalGradients: UnsafeMutableBufferPointer<Float>? = nil
                    var headGradient: UnsafeMutableBufferPointer<Float>? = nil
                    if training {
                        finalGradients = try store.gradients(unit: finalUnit)
                        headGradient = config.tieWordEmbeddings ? try store.gradients(unit: embeddingUnit).view(0..<(v * c))
                                                                : finalGradients!.view(c..<(c + v * c))
                    }
                    let result = Classifier.forwardBackward(
                        hidden: a.normed.prefix(n * c), weight: headWeight, targets: targets,
                        vocabulary: v, channels: c, scale: lossScale,
                        dhidden: training ? a.dnormed.slice(0..<(n * c)) : nil, dweight: headGradient)
                    if config.tieWordEmbeddings {
                        if training { try store.releaseGradients(unit: headUnit) }
                        try store.releaseParameters(unit: headUnit)
                    }
                    guard training, let finalGradients else {
                        try store.releaseParameters(unit: finalUnit)
                        return result
                    }
                    // Backward.
                    a.residualGradient.zero()
                    RMSNorm.backward(dinp: a.residualGradient.slice(0..<(n * c)), dweight: finalGradients.view(0..<c),
                                     dout: a.dnormed.prefix(n * c), inp: a.layerInput.last!.prefix(n * c),
                                     weight: normWeight, rstd: a.finalRstd.prefix(n), tokens: n, channels: c)
                    try store.releaseGradients(unit: finalUnit)
                    try store.releaseParameters(unit: finalUnit)
                    for l in (0..<config.numHiddenLayers).reversed() {
                        let unit = layout.layerUnit(l)
                        let weights = try store.parameters(unit: unit)
                        let gradients = try store.gradients(unit: unit)
                        layerBackward(l, weights: weights, gradients: gradients, positions: positions,
                                      boundaries: batch.boundaries, tokens: n)
                        try store.releaseGradients(unit: unit)
                        try store.releaseParameters(unit: unit)
                        try check(a.residualGradient, n * c, "layer \(l) input gradient")
                    }
                    let embeddingGradient = try store.gradients(unit: embeddingUnit)
                    Embedding.backward(dweight: embeddingGradient.view(0..<(v * c)), dout: a.residualGradient.prefix(n * c),
                                       tokens: tokens, vocabulary: v, channels: c)
                    try store.releaseGradients(unit: embeddingUnit)
                    return result
                }
            }
        }
    }

    /// Logits `(N, V)` at every position (evaluation and generation; no backward).
    public func logits(_ batch: TokenBatch, store: UnitStore) throws -> [Float] {
        let n = batch.count, c = config.hiddenSize, v = config.vocabSize
        precondition(n <= maxTokens, "DecoderModel.logits: \(n) tokens exceed the \(maxTokens) allocated for")
        if config.rotaryDependsOnLength { rotary = config.rotaryTable(positions: rotary.maxPositions, sequenceLength: batch.longestExample) }
        let a = activations
        var out = [Float](repeating: 0, count: n * v)
        try batch.tokens.withUnsafeBufferPointer { tokens in
            try batch.positions.withUnsafeBufferPointer { positions in
                let embedding = try store.parameters(unit: layout.embeddingUnit).view(0..<(v * c))
                Embedding.forward(out: a.layerInput[0].pointer, tokens: tokens, weight: embedding, vocabulary: v, channels: c)
                try store.releaseParameters(unit: layout.embeddingUnit)
                for l in 0..<config.numHiddenLayers {
                    let weights = try store.parameters(unit: layout.layerUnit(l))
                    layerForward(l, weights: weights, positions: positions, boundaries: batch.boundaries, tokens: n)
                    try store.releaseParameters(unit: layout.layerUnit(l))
                }
                let final = try store.parameters(unit: layout.finalUnit)
                RMSNorm.forward(out: a.normed.pointer, rstd: a.finalRstd.pointer, inp: a.layerInput.last!.prefix(n * c),
                                weight: final.view(0..<c), tokens: n, channels: c, epsilon: Float(config.rmsNormEps))
                let head = config.tieWordEmbeddings ? try store.parameters(unit: layout.embeddingUnit).view(0..<(v * c))
                                                     : final.view(c..<(c + v * c))
                out.withUnsafeMutableBufferPointer {
                    Classifier.logits(out: $0, hidden: a.normed.prefix(n * c), weight: head, rows: n, vocabulary: v, channels: c)
                }
                if config.tieWordEmbeddings { try store.releaseParameters(unit: layout.embeddingUnit) }
                try store.releaseParameters(unit: layout.finalUnit)
            }
        }
        return out
    }

    private func check(_ buffer: FloatBuffer, _ count: Int, _ location: @autoclosure () -> String) throws {
        guard checkFinite else { return }
        let p = buffer.pointer
        for i in 0..<count where !p[i].isFinite {
            throw NonFiniteValueError(location: location(), index: i, value: p[i])
        }
    }
}
