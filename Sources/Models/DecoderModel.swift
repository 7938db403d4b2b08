import Kernels

/// Where the model gets each unit's full parameters and where it accumulates their gradients.
///
/// Access is scoped (swift-nio style): a unit's parameters and its gradient buffer are reachable only
/// inside the closure, so no pointer outlives the gather that filled it or the reduce-scatter that
/// takes it. At ZeRO stage 3 ``withParameters(of:_:)`` all-gathers the unit (or waits for its
/// prefetch) and frees it when the closure returns; at stages 2–3 ``withGradients(of:_:)`` starts the
/// unit's gradient reduce-scatter when the closure returns. A pass asks for parameters in exactly
/// the order of ``DecoderModel/parameterSchedule(training:)`` (given to ``beginPass(schedule:)``), so
/// an implementation can prefetch the next unit.
public protocol UnitStore: AnyObject {
    /// Starts a forward (and backward) pass that will ask for units' parameters in `schedule` order.
    func beginPass(schedule: [Int]) throws
    /// Ends the pass: completes every collective it started.
    func endPass() throws
    /// Runs `body` with the unit's full parameters (unpadded count or more), valid only inside.
    func withParameters<R>(of unit: Int, _ body: (UnsafeBufferPointer<Float>) throws -> R) throws -> R
    /// Runs `body` with a full-size buffer of the unit's gradient to accumulate into (`+=`), valid only inside.
    func withGradients<R>(of unit: Int, _ body: (UnsafeMutableBufferPointer<Float>) throws -> R) throws -> R
    /// The progress hook: the model calls it between its matrix products, so that collectives in
    /// flight (a prefetch, gradient reduce-scatters) move during compute. It must be cheap when
    /// nothing is due (the ZeRO engine rate-limits it by the clock), must not change any result,
    /// and cannot throw: an implementation keeps an error and throws it from its next scope.
    func progressInFlight()
}

extension UnitStore {
    /// Nothing in flight: a local store has nothing to progress.
    public func progressInFlight() {}
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
    /// Called once per training ``step(_:store:lossScale:training:)`` between the forward pass and the
    /// backward (a test hook: `ZERO_SFT_FAULT`'s `backward` phase; nil otherwise).
    public var beforeBackward: (() -> Void)? = nil

    let shape: Attention.Shape
    let activations: Activations
    /// The classifier's chunk buffers, kept from one micro-batch to the next (``Classifier/Workspace``).
    let classifierWorkspace = Classifier.Workspace()
    /// The store of the pass in progress, whose ``UnitStore/progressInFlight()`` ``progress()`` calls.
    private var passStore: UnitStore? = nil

    /// Lets the pass's communication advance: called between matrix products (see
    /// ``UnitStore/progressInFlight()``). Changes no value the model computes.
    @inline(__always) func progress() { passStore?.progressInFlight() }

    /// - Parameter training: whether ``step(_:store:lossScale:training:)`` will run backwards. An
    ///   inference-only model (evaluation) keeps one layer's cache, reused by every layer, instead of L.
    public init(config: ModelConfig, maxTokens: Int, training: Bool = true) {
        self.config = config
        self.layout = ParameterLayout(config: config)
        self.maxTokens = maxTokens
        self.trains = training
        self.rotary = config.rotaryTable(positions: max(maxTokens, 1))
        self.shape = Attention.Shape(queryHeads: config.numAttentionHeads, keyValueHeads: config.numKeyValueHeads,
                                     headDimension: config.headDimension, window: config.slidingWindow)
        self.activations = Activations(config: config, maxTokens: maxTokens, cachedLayers: training ? config.numHiddenLayers : 1,
                                       fusedQKV: layout.layer.qkv != nil)
    }

    /// Whether the model keeps every layer's activations for a backward.
    public let trains: Bool

    /// Bytes held for activations (cached per layer for the backward) and scratch.
    public var activationBytes: Int { activations.bytes }

    /// Bytes the classifier's chunk buffers hold (0 before the first micro-batch; ``Classifier/Workspace``).
    public var classifierBytes: Int { classifierWorkspace.bytes }

    /// The cache slot of layer `l` (an inference-only model reuses slot 0).
    @inline(__always) func slot(_ l: Int) -> Int { trains ? l : 0 }
    /// The buffer holding the input of layer `l` (`l = L`: the final hidden state); an inference-only
    /// model alternates between two.
    @inline(__always) func input(_ l: Int) -> FloatBuffer { activations.layerInput[trains ? l : l % 2] }

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
        precondition(trains || !training, "DecoderModel.step: an inference-only model cannot train")
        if config.rotaryDependsOnLength { rotary = config.rotaryTable(positions: rotary.maxPositions, sequenceLength: batch.longestExample) }
        let c = config.hiddenSize, v = config.vocabSize, a = activations, layers = config.numHiddenLayers
        let embeddingUnit = layout.embeddingUnit, finalUnit = layout.finalUnit, tied = config.tieWordEmbeddings
        try store.beginPass(schedule: parameterSchedule(training: training))
        passStore = store
        defer { passStore = nil }

        let result = try batch.tokens.withUnsafeBufferPointer { tokens in
            try batch.positions.withUnsafeBufferPointer { positions in
                try batch.targets.withUnsafeBufferPointer { targets in
                    // Forward.
                    try store.withParameters(of: embeddingUnit) { embedding in
                        Embedding.forward(out: input(0).pointer, tokens: tokens, weight: embedding.view(0..<(v * c)), vocabulary: v, channels: c)
                    }
                    try check(input(0), n * c, "embedding output")
                    for l in 0..<layers {
                        try store.withParameters(of: layout.layerUnit(l)) { weights in
                            layerForward(l, weights: LayerWeights(weights, layout.layer), positions: positions,
                                         boundaries: batch.boundaries, tokens: n)
                        }
                        try check(input(l + 1), n * c, "layer \(l) output")
                    }
                    let hidden = input(layers).prefix(n * c)
                    return try store.withParameters(of: finalUnit) { final in
                        let normWeight = final.view(0..<c)
                        RMSNorm.forward(out: a.normed.pointer, rstd: a.finalRstd.pointer, inp: hidden,
                                        weight: normWeight, tokens: n, channels: c, epsilon: Float(config.rmsNormEps))
                        // Output projection and loss, fused with their backward (the head is the
                        // embedding again when tied, else the final unit's second tensor).
                        func classify(_ head: UnsafeBufferPointer<Float>, _ dhead: UnsafeMutableBufferPointer<Float>?) -> Classifier.Result {
                            Classifier.forwardBackward(
                                hidden: a.normed.prefix(n * c), weight: head, targets: targets, vocabulary: v, channels: c,
                                scale: lossScale, dhidden: training ? a.dnormed.slice(0..<(n * c)) : nil, dweight: dhead,
                                workspace: classifierWorkspace, progress: progress)
                        }
                        guard training else {
                            return tied ? try store.withParameters(of: embeddingUnit) { classify($0.view(0..<(v * c)), nil) }
                                        : classify(final.view(c..<(c + v * c)), nil)
                        }
                        if training { beforeBackward?() }
                        return try store.withGradients(of: finalUnit) { finalGradients in
                            let result = tied
                                ? try store.withParameters(of: embeddingUnit) { embedding in
                                    try store.withGradients(of: embeddingUnit) { classify(embedding.view(0..<(v * c)), $0.view(0..<(v * c))) }
                                }
                                : classify(final.view(c..<(c + v * c)), finalGradients.view(c..<(c + v * c)))
                            // Backward: the residual gradient is accumulated by every layer from here on.
                            a.residualGradient.zero()
                            RMSNorm.backward(dinp: a.residualGradient.slice(0..<(n * c)), dweight: finalGradients.view(0..<c),
                                             dout: a.dnormed.prefix(n * c), inp: hidden,
                                             weight: normWeight, rstd: a.finalRstd.prefix(n), tokens: n, channels: c)
                            return result
                        }
                    }
                }
            }
        }
        if training {
            try batch.positions.withUnsafeBufferPointer { positions in
                for l in (0..<layers).reversed() {
                    let unit = layout.layerUnit(l)
                    try store.withParameters(of: unit) { weights in
                        try store.withGradients(of: unit) { gradients in
                            layerBackward(l, weights: LayerWeights(weights, layout.layer),
                                          gradients: LayerGradients(gradients, layout.layer),
                                          positions: positions, boundaries: batch.boundaries, tokens: n)
                        }
                    }
                    try check(a.residualGradient, n * c, "layer \(l) input gradient")
                }
            }
            try batch.tokens.withUnsafeBufferPointer { tokens in
                try store.withGradients(of: embeddingUnit) { gradient in
                    Embedding.backward(dweight: gradient.view(0..<(v * c)), dout: a.residualGradient.prefix(n * c),
                                       tokens: tokens, vocabulary: v, channels: c)
                }
            }
        }
        try store.endPass()
        return result
    }

    /// Logits `(N, V)` at every position (evaluation and generation; no backward).
    public func logits(_ batch: TokenBatch, store: UnitStore) throws -> [Float] {
        let n = batch.count, c = config.hiddenSize, v = config.vocabSize
        precondition(n <= maxTokens, "DecoderModel.logits: \(n) tokens exceed the \(maxTokens) allocated for")
        if config.rotaryDependsOnLength { rotary = config.rotaryTable(positions: rotary.maxPositions, sequenceLength: batch.longestExample) }
        let a = activations, layers = config.numHiddenLayers
        var out = [Float](repeating: 0, count: n * v)
        try store.beginPass(schedule: parameterSchedule(training: false))
        passStore = store
        defer { passStore = nil }
        try batch.tokens.withUnsafeBufferPointer { tokens in
            try batch.positions.withUnsafeBufferPointer { positions in
                try store.withParameters(of: layout.embeddingUnit) { embedding in
                    Embedding.forward(out: input(0).pointer, tokens: tokens, weight: embedding.view(0..<(v * c)), vocabulary: v, channels: c)
                }
                for l in 0..<layers {
                    try store.withParameters(of: layout.layerUnit(l)) { weights in
                        layerForward(l, weights: LayerWeights(weights, layout.layer), positions: positions,
                                     boundaries: batch.boundaries, tokens: n)
                    }
                }
                try store.withParameters(of: layout.finalUnit) { final in
                    RMSNorm.forward(out: a.normed.pointer, rstd: a.finalRstd.pointer, inp: input(layers).prefix(n * c),
                                    weight: final.view(0..<c), tokens: n, channels: c, epsilon: Float(config.rmsNormEps))
                    func project(_ head: UnsafeBufferPointer<Float>) {
                        out.withUnsafeMutableBufferPointer {
                            Classifier.logits(out: $0, hidden: a.normed.prefix(n * c), weight: head, rows: n, vocabulary: v, channels: c)
                        }
                    }
                    if config.tieWordEmbeddings {
                        try store.withParameters(of: layout.embeddingUnit) { project($0.view(0..<(v * c))) }
                    } else {
                        project(final.view(c..<(c + v * c)))
                    }
                }
            }
        }
        try store.endPass()
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
