import Kernels

/// A failure while generating, with what was asked and what the limit is.
public struct GenerationError: Error, CustomStringConvertible, Equatable {
    public var message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

/// Incremental decoding with a key/value cache: the forward of ``DecoderModel`` for new tokens only.
///
/// Each layer keeps the rotated keys and the values of every token seen so far, `(capacity, Hkv·d)`.
/// ``append(_:store:)`` runs new tokens (a whole prompt, or one sampled token) through the layers:
/// their keys and values are written into the cache at their positions, and their queries attend to
/// the cache (``CachedAttention``). The per-layer math is the same as
/// ``DecoderModel/layerForward(_:weights:positions:boundaries:tokens:)``:
/// `h = x + Wo·attn(rope(Wq·n₁(x)), rope(Wk·n₁(x)), Wv·n₁(x))`, `y = h + Wd·(silu(Wg·n₂(h)) ⊙ Wu·n₂(h))`,
/// so generating token by token gives the logits a full forward gives (tests compare them).
///
/// Units are taken from the store in ``DecoderModel/parameterSchedule(training:)`` order (inference),
/// once per chunk of at most `chunk` tokens, so a prompt costs a few matrix-matrix products and each
/// further token a pass of matrix-vector products. Memory: `2 · L · capacity · Hkv · d` floats of
/// cache plus `chunk`-row scratch.
public final class Generator {
    public let config: ModelConfig
    public let layout: ParameterLayout
    /// The most tokens the cache holds (prompt plus generated).
    public let capacity: Int
    /// The most tokens one pass through the layers processes.
    public let chunk: Int
    /// Tokens in the cache.
    public private(set) var length = 0
    /// The logits after the last token in the cache, if the last append computed them.
    private var lastLogits: [Float]?

    var rotary: RotaryTable
    let shape: Attention.Shape
    let keys: [FloatBuffer], values: [FloatBuffer]
    let hidden: FloatBuffer, normed: FloatBuffer, rstd: FloatBuffer
    let queries: FloatBuffer, attention: FloatBuffer, projected: FloatBuffer
    let gate: FloatBuffer, up: FloatBuffer, product: FloatBuffer

    public init(config: ModelConfig, capacity: Int, chunk: Int = 128) {
        precondition(capacity >= 1 && chunk >= 1, "Generator: capacity and chunk must be positive")
        self.config = config
        self.layout = ParameterLayout(config: config)
        self.capacity = capacity
        self.chunk = min(chunk, capacity)
        rotary = config.rotaryTable(positions: capacity)
        shape = Attention.Shape(queryHeads: config.numAttentionHeads, keyValueHeads: config.numKeyValueHeads,
                                headDimension: config.headDimension, window: config.slidingWindow)
        let c = config.hiddenSize, f = config.intermediateSize, n = self.chunk
        let qw = config.numAttentionHeads * config.headDimension, kw = config.numKeyValueHeads * config.headDimension
        keys = (0..<config.numHiddenLayers).map { _ in FloatBuffer(count: capacity * kw) }
        values = (0..<config.numHiddenLayers).map { _ in FloatBuffer(count: capacity * kw) }
        hidden = FloatBuffer(count: n * c); normed = FloatBuffer(count: n * c); rstd = FloatBuffer(count: n)
        queries = FloatBuffer(count: n * qw); attention = FloatBuffer(count: n * qw); projected = FloatBuffer(count: n * c)
        gate = FloatBuffer(count: n * f); up = FloatBuffer(count: n * f); product = FloatBuffer(count: n * f)
    }

    /// Bytes of the key/value cache.
    public var cacheBytes: Int { keys.reduce(0) { $0 + $1.bytes } + values.reduce(0) { $0 + $1.bytes } }

    /// Forgets the context (the cache is overwritten by the next ``append(_:store:)``).
    public func reset() {
        length = 0
        lastLogits = nil
    }

    /// Drops the context after its first `length` tokens (e.g. to retry a reply).
    public func truncate(to length: Int) {
        precondition(length >= 0 && length <= self.length, "Generator.truncate: \(length) outside 0...\(self.length)")
        if length != self.length { lastLogits = nil }
        self.length = length
    }

    /// Appends `tokens` to the context and returns the logits `(V)` predicting the token after the last one.
    ///
    /// Throws ``GenerationError`` when the tokens do not fit in the cache or an id is outside the vocabulary.
    public func append(_ tokens: [Int32], store: UnitStore) throws -> [Float] {
        guard !tokens.isEmpty else { throw GenerationError("Generator.append: no tokens") }
        guard length + tokens.count <= capacity else {
            throw GenerationError("the context would hold \(length + tokens.count) tokens; the cache holds \(capacity) (raise --max-context)")
        }
        if let bad = tokens.firstIndex(where: { $0 < 0 || Int($0) >= config.vocabSize }) {
            throw GenerationError("token id \(tokens[bad]) at index \(bad) is outside the vocabulary (0..<\(config.vocabSize))")
        }
        // Dynamic RoPE: transformers scales for max(position_ids) + 1 of the forward (the whole append).
        if config.rotaryDependsOnLength { rotary = config.rotaryTable(positions: capacity, sequenceLength: length + tokens.count) }
        var logits: [Float] = []
        var start = 0
        while start < tokens.count {
            let end = min(start + chunk, tokens.count)
            logits = try forward(Array(tokens[start..<end]), store: store, wantLogits: end == tokens.count)
            start = end
        }
        lastLogits = logits
        return logits
    }

    /// Why ``generate(after:store:sampler:maxNewTokens:stopTokens:onToken:)`` stopped.
    public enum StopReason: String, Sendable, Codable {
        /// A stop token (end of turn or EOS) was chosen; it is in the cache but not in the returned tokens.
        case stopToken = "stop_token"
        /// `maxNewTokens` tokens were generated.
        case length
        /// The cache is full.
        case context
    }

    /// Appends `prompt` (may be empty if the context already ends where generation starts), then
    /// samples up to `maxNewTokens` tokens one at a time, feeding each back through the cache.
    /// `onToken` sees every generated token (not the stop token) as soon as it is chosen.
    public func generate(
        after prompt: [Int32], store: UnitStore, sampler: inout TokenSampler, maxNewTokens: Int,
        stopTokens: Set<Int>, onToken: (Int) throws -> Void = { _ in }
    ) throws -> (tokens: [Int], reason: StopReason) {
        guard maxNewTokens > 0 else { return ([], .length) }
        guard !prompt.isEmpty || lastLogits != nil else { throw GenerationError("Generator.generate: empty context and prompt") }
        var logits = prompt.isEmpty ? lastLogits! : try append(prompt, store: store)
        var generated: [Int] = []
        while true {
            let next = sampler.next(logits)
            if stopTokens.contains(next) {
                if length < capacity { lastLogits = try append([Int32(next)], store: store) }
                return (generated, .stopToken)
            }
            generated.append(next)
            try onToken(next)
            if generated.count == maxNewTokens {
                if length < capacity { lastLogits = try append([Int32(next)], store: store) }
                return (generated, .length)
            }
            if length >= capacity { return (generated, .context) }
            logits = try append([Int32(next)], store: store)
        }
    }

    /// One pass of `n ≤ chunk` tokens at positions `length ..< length + n`; logits of the last one if asked.
    ///
    /// Units are asked for in schedule order: embedding, layers, and (for logits) the final unit and
    /// the tied head; a sharded store gathers each on every rank, so every rank must make the same calls.
    private func forward(_ tokens: [Int32], store: UnitStore, wantLogits: Bool) throws -> [Float] {
        let n = tokens.count, c = config.hiddenSize, v = config.vocabSize, layers = config.numHiddenLayers
        let past = length
        let positions = (0..<n).map { Int32(past + $0) }
        var schedule = [layout.embeddingUnit] + (0..<layers).map(layout.layerUnit)
        if wantLogits { schedule += [layout.finalUnit] + (config.tieWordEmbeddings ? [layout.embeddingUnit] : []) }
        try store.beginPass(schedule: schedule)
        try tokens.withUnsafeBufferPointer { ids in
            try store.withParameters(of: layout.embeddingUnit) { embedding in
                Embedding.forward(out: hidden.pointer, tokens: ids, weight: embedding.view(0..<(v * c)), vocabulary: v, channels: c)
            }
        }
        try positions.withUnsafeBufferPointer { positions in
            for l in 0..<layers {
                try store.withParameters(of: layout.layerUnit(l)) { weights in
                    layerForward(l, weights: LayerWeights(weights, layout.layer), positions: positions, past: past, tokens: n)
                }
            }
        }
        length = past + n
        guard wantLogits else {
            try store.endPass()
            return []
        }
        // Only the last token's logits are needed.
        var logits = [Float](repeating: 0, count: v)
        try store.withParameters(of: layout.finalUnit) { final in
            let last = hidden.prefix(n * c).view(((n - 1) * c)..<(n * c))
            RMSNorm.forward(out: normed.pointer, rstd: rstd.pointer, inp: last, weight: final.view(0..<c),
                            tokens: 1, channels: c, epsilon: Float(config.rmsNormEps))
            func project(_ head: UnsafeBufferPointer<Float>) {
                logits.withUnsafeMutableBufferPointer {
                    Classifier.logits(out: $0, hidden: normed.prefix(c), weight: head, rows: 1, vocabulary: v, channels: c)
                }
            }
            if config.tieWordEmbeddings {
                try store.withParameters(of: layout.embeddingUnit) { project($0.view(0..<(v * c))) }
            } else {
                project(final.view(c..<(c + v * c)))
            }
        }
        try store.endPass()
        return logits
    }

    /// One decoder layer over the `n` new tokens in `hidden`, in place, writing their keys and values
    /// into the cache rows `past ..< past + n`.
    private func layerForward(_ l: Int, weights w: LayerWeights, positions: UnsafeBufferPointer<Int32>,
                              past: Int, tokens n: Int) {
        let c = config.hiddenSize, f = config.intermediateSize
        let qw = shape.queryHeads * shape.headDimension, kw = shape.keyValueHeads * shape.headDimension
        let eps = Float(config.rmsNormEps)
        let x = hidden.slice(0..<(n * c)), xIn = UnsafeBufferPointer(x)
        let normedIn = normed.prefix(n * c)
        let newKeys = keys[l].slice((past * kw)..<((past + n) * kw)), newValues = values[l].slice((past * kw)..<((past + n) * kw))
        // Attention block.
        RMSNorm.forward(out: normed.pointer, rstd: rstd.pointer, inp: xIn, weight: w.inputNorm, tokens: n, channels: c, epsilon: eps)
        Linear.forward(out: queries.pointer, inp: normedIn, weight: w.q, bias: w.qBias,
                       tokens: n, inputs: c, outputs: qw)
        Linear.forward(out: newKeys, inp: normedIn, weight: w.k, bias: w.kBias,
                       tokens: n, inputs: c, outputs: kw)
        Linear.forward(out: newValues, inp: normedIn, weight: w.v, bias: w.vBias,
                       tokens: n, inputs: c, outputs: kw)
        RoPE.apply(queries.pointer, positions: positions, heads: shape.queryHeads, table: rotary)
        RoPE.apply(newKeys, positions: positions, heads: shape.keyValueHeads, table: rotary)
        CachedAttention.forward(out: attention.pointer, q: queries.prefix(n * qw),
                                keys: keys[l].prefix((past + n) * kw), values: values[l].prefix((past + n) * kw),
                                past: past, newTokens: n, shape: shape)
        Linear.forward(out: projected.pointer, inp: attention.prefix(n * qw), weight: w.o, bias: nil,
                       tokens: n, inputs: qw, outputs: c)
        addInPlace(x, projected.prefix(n * c))
        // MLP block.
        RMSNorm.forward(out: normed.pointer, rstd: rstd.pointer, inp: xIn, weight: w.postNorm, tokens: n, channels: c, epsilon: eps)
        Linear.forward(out: gate.pointer, inp: normedIn, weight: w.gate, bias: nil, tokens: n, inputs: c, outputs: f)
        Linear.forward(out: up.pointer, inp: normedIn, weight: w.up, bias: nil, tokens: n, inputs: c, outputs: f)
        SwiGLU.forward(out: product.pointer, gate: gate.prefix(n * f), up: up.prefix(n * f), count: n * f)
        Linear.forward(out: projected.pointer, inp: product.prefix(n * f), weight: w.down, bias: nil, tokens: n, inputs: f, outputs: c)
        addInPlace(x, projected.prefix(n * c))
    }

    /// `x += y` elementwise.
    private func addInPlace(_ x: UnsafeMutableBufferPointer<Float>, _ y: UnsafeBufferPointer<Float>) {
        guard !x.isEmpty else { return }
        let xb = x.baseAddress!, yb = y.baseAddress!
        for i in 0..<x.count { xb[i] += yb[i] }
    }
}
