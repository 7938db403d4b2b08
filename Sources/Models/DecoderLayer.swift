import Kernels

/// A decoder layer's parameters, each tensor a view of the layer unit's gathered buffer at the
/// offsets of ``ParameterLayout/layer`` (valid only inside the ``UnitStore`` scope that lent the unit).
struct LayerWeights {
    let inputNorm, q, k, v, o, postNorm, gate, up, down: UnsafeBufferPointer<Float>
    let qBias, kBias, vBias: UnsafeBufferPointer<Float>?

    init(_ unit: UnsafeBufferPointer<Float>, _ t: LayerTensors) {
        inputNorm = unit.view(t.inputNorm); postNorm = unit.view(t.postNorm)
        q = unit.view(t.q); k = unit.view(t.k); v = unit.view(t.v); o = unit.view(t.o)
        gate = unit.view(t.gate); up = unit.view(t.up); down = unit.view(t.down)
        qBias = t.qBias.map { unit.view($0) }; kBias = t.kBias.map { unit.view($0) }; vBias = t.vBias.map { unit.view($0) }
    }
}

/// A decoder layer's gradients, the same views into the unit's gradient buffer.
struct LayerGradients {
    let inputNorm, q, k, v, o, postNorm, gate, up, down: UnsafeMutableBufferPointer<Float>
    let qBias, kBias, vBias: UnsafeMutableBufferPointer<Float>?

    init(_ unit: UnsafeMutableBufferPointer<Float>, _ t: LayerTensors) {
        inputNorm = unit.view(t.inputNorm); postNorm = unit.view(t.postNorm)
        q = unit.view(t.q); k = unit.view(t.k); v = unit.view(t.v); o = unit.view(t.o)
        gate = unit.view(t.gate); up = unit.view(t.up); down = unit.view(t.down)
        qBias = t.qBias.map { unit.view($0) }; kBias = t.kBias.map { unit.view($0) }; vBias = t.vBias.map { unit.view($0) }
    }
}

/// Activation memory: what each layer caches for its backward, and shared scratch.
///
/// Per layer and token: the layer input (C), two rstd values, rotated q and k, v, the attention
/// output and its log-sum-exp, the residual after attention (C), the MLP gate and up projections (2F).
/// The normalised inputs and the SwiGLU product are recomputed in the backward instead of stored.
/// An inference-only model caches one layer (`cachedLayers` 1) and two layer inputs, reused in turn.
///
/// The backward's scratch (`dProduct`, `dGate`, `dUp`, `dnormed`, `dAttention`, `dq`, `dk`, `dv`, and
/// `projected` as the attention block's `dnormed`) is only ever accumulated into (`+=`), and zeroed
/// once at the start of each layer's backward (``zeroLayerGradients(tokens:)``): the layers share
/// it, so zeroing once per micro-step would need L copies.
final class Activations {
    let layerInput: [FloatBuffer]     // L + 1 buffers of (N, C): input of each layer, and the final hidden state
    let rstd1: [FloatBuffer], rstd2: [FloatBuffer]
    let q: [FloatBuffer], k: [FloatBuffer], v: [FloatBuffer]
    let attention: [FloatBuffer], lse: [FloatBuffer]
    let middle: [FloatBuffer]
    let gate: [FloatBuffer], up: [FloatBuffer]
    let finalRstd: FloatBuffer
    // Scratch shared by all layers.
    let normed: FloatBuffer, projected: FloatBuffer, product: FloatBuffer
    let dnormed: FloatBuffer, residualGradient: FloatBuffer
    let dAttention: FloatBuffer, dq: FloatBuffer, dk: FloatBuffer, dv: FloatBuffer
    let dProduct: FloatBuffer, dGate: FloatBuffer, dUp: FloatBuffer

    init(config: ModelConfig, maxTokens n: Int, cachedLayers layers: Int) {
        let c = config.hiddenSize, f = config.intermediateSize
        let qw = config.numAttentionHeads * config.headDimension, kw = config.numKeyValueHeads * config.headDimension
        func perLayer(_ count: Int) -> [FloatBuffer] { (0..<layers).map { _ in FloatBuffer(count: count) } }
        layerInput = (0...max(layers, 1)).map { _ in FloatBuffer(count: n * c) }
        rstd1 = perLayer(n); rstd2 = perLayer(n)
        q = perLayer(n * qw); k = perLayer(n * kw); v = perLayer(n * kw)
        attention = perLayer(n * qw); lse = perLayer(n * config.numAttentionHeads)
        middle = perLayer(n * c)
        gate = perLayer(n * f); up = perLayer(n * f)
        finalRstd = FloatBuffer(count: n)
        normed = FloatBuffer(count: n * c); projected = FloatBuffer(count: n * c); product = FloatBuffer(count: n * f)
        dnormed = FloatBuffer(count: n * c); residualGradient = FloatBuffer(count: n * c)
        dAttention = FloatBuffer(count: n * qw); dq = FloatBuffer(count: n * qw)
        dk = FloatBuffer(count: n * kw); dv = FloatBuffer(count: n * kw)
        dProduct = FloatBuffer(count: n * f); dGate = FloatBuffer(count: n * f); dUp = FloatBuffer(count: n * f)
        maxTokens = n
    }

    /// Zeroes the first `n` tokens' rows of the backward's scratch: the one place a layer's backward
    /// clears what its kernels accumulate into.
    func zeroLayerGradients(tokens n: Int) {
        guard n > 0 else { return }
        for buffer in [dProduct, dGate, dUp, dnormed, dAttention, dq, dk, dv, projected] {
            buffer.slice(0..<(buffer.count / maxTokens * n)).update(repeating: 0)
        }
    }

    let maxTokens: Int

    var bytes: Int {
        let cached = [layerInput, rstd1, rstd2, q, k, v, attention, lse, middle, gate, up].joined().reduce(0) { $0 + $1.bytes }
        let scratch = [finalRstd, normed, projected, product, dnormed, residualGradient, dAttention, dq, dk, dv, dProduct, dGate, dUp]
            .reduce(0) { $0 + $1.bytes }
        return cached + scratch
    }
}

extension DecoderModel {
    /// One decoder layer, forward:
    /// `h = x + Wo·attn(rope(Wq·n₁(x)), rope(Wk·n₁(x)), Wv·n₁(x))`, `y = h + Wd·(silu(Wg·n₂(h)) ⊙ Wu·n₂(h))`.
    func layerForward(_ l: Int, weights w: LayerWeights, positions: UnsafeBufferPointer<Int32>,
                      boundaries: [Int], tokens n: Int) {
        let c = config.hiddenSize, f = config.intermediateSize, a = activations, s = slot(l)
        let qw = shape.queryHeads * shape.headDimension, kw = shape.keyValueHeads * shape.headDimension
        let eps = Float(config.rmsNormEps)
        let x = input(l).prefix(n * c), middle = a.middle[s].slice(0..<(n * c))
        let normed = a.normed.slice(0..<(n * c))
        let q = a.q[s], k = a.k[s], v = a.v[s], attention = a.attention[s], gate = a.gate[s], up = a.up[s]
        // Attention block.
        RMSNorm.forward(out: normed, rstd: a.rstd1[s].pointer, inp: x, weight: w.inputNorm, tokens: n, channels: c, epsilon: eps)
        Linear.forward(out: q.pointer, inp: UnsafeBufferPointer(normed), weight: w.q, bias: w.qBias, tokens: n, inputs: c, outputs: qw)
        progress()
        Linear.forward(out: k.pointer, inp: UnsafeBufferPointer(normed), weight: w.k, bias: w.kBias, tokens: n, inputs: c, outputs: kw)
        progress()
        Linear.forward(out: v.pointer, inp: UnsafeBufferPointer(normed), weight: w.v, bias: w.vBias, tokens: n, inputs: c, outputs: kw)
        progress()
        RoPE.apply(q.pointer, positions: positions, heads: shape.queryHeads, table: rotary)
        RoPE.apply(k.pointer, positions: positions, heads: shape.keyValueHeads, table: rotary)
        Attention.forward(out: attention.pointer, lse: a.lse[s].pointer,
                          q: q.prefix(n * qw), k: k.prefix(n * kw), v: v.prefix(n * kw),
                          boundaries: boundaries, shape: shape)
        progress()
        Linear.forward(out: a.projected.pointer, inp: attention.prefix(n * qw), weight: w.o, bias: nil,
                       tokens: n, inputs: qw, outputs: c)
        progress()
        add(middle, x, a.projected.prefix(n * c))
        // MLP block.
        RMSNorm.forward(out: normed, rstd: a.rstd2[s].pointer, inp: UnsafeBufferPointer(middle), weight: w.postNorm,
                        tokens: n, channels: c, epsilon: eps)
        Linear.forward(out: gate.pointer, inp: UnsafeBufferPointer(normed), weight: w.gate, bias: nil, tokens: n, inputs: c, outputs: f)
        progress()
        Linear.forward(out: up.pointer, inp: UnsafeBufferPointer(normed), weight: w.up, bias: nil, tokens: n, inputs: c, outputs: f)
        progress()
        SwiGLU.forward(out: a.product.pointer, gate: gate.prefix(n * f), up: up.prefix(n * f), count: n * f)
        Linear.forward(out: a.projected.pointer, inp: a.product.prefix(n * f), weight: w.down, bias: nil, tokens: n, inputs: f, outputs: c)
        progress()
        add(input(l + 1).slice(0..<(n * c)), UnsafeBufferPointer(middle), a.projected.prefix(n * c))
    }

    /// One decoder layer, backward: reads `dL/dy` from the residual gradient and leaves `dL/dx` there,
    /// accumulating every weight gradient into `g`. Every kernel accumulates (`+=`); the layer's
    /// scratch is zeroed once, first.
    func layerBackward(_ l: Int, weights w: LayerWeights, gradients g: LayerGradients,
                       positions: UnsafeBufferPointer<Int32>, boundaries: [Int], tokens n: Int) {
        let c = config.hiddenSize, f = config.intermediateSize, a = activations
        let qw = shape.queryHeads * shape.headDimension, kw = shape.keyValueHeads * shape.headDimension
        let eps = Float(config.rmsNormEps)
        let x = a.layerInput[l].prefix(n * c), middle = a.middle[l].prefix(n * c)
        let normed = a.normed.slice(0..<(n * c))
        let residual = a.residualGradient.slice(0..<(n * c))
        a.zeroLayerGradients(tokens: n)
        // MLP block: recompute n₂(h) and the SwiGLU product.
        RMSNorm.forward(out: normed, rstd: a.rstd2[l].pointer, inp: middle, weight: w.postNorm, tokens: n, channels: c, epsilon: eps)
        SwiGLU.forward(out: a.product.pointer, gate: a.gate[l].prefix(n * f), up: a.up[l].prefix(n * f), count: n * f)
        let dProduct = a.dProduct.slice(0..<(n * f)), dGate = a.dGate.slice(0..<(n * f)), dUp = a.dUp.slice(0..<(n * f))
        let dMLPNormed = a.dnormed.slice(0..<(n * c))
        Linear.backward(dinp: dProduct, dweight: g.down, dbias: nil, dout: UnsafeBufferPointer(residual),
                        inp: a.product.prefix(n * f), weight: w.down, tokens: n, inputs: f, outputs: c)
        progress()
        SwiGLU.backward(dgate: dGate, dup: dUp, dout: UnsafeBufferPointer(dProduct), gate: a.gate[l].prefix(n * f),
                        up: a.up[l].prefix(n * f), count: n * f)
        Linear.backward(dinp: dMLPNormed, dweight: g.gate, dbias: nil, dout: UnsafeBufferPointer(dGate),
                        inp: UnsafeBufferPointer(normed), weight: w.gate, tokens: n, inputs: c, outputs: f)
        progress()
        Linear.backward(dinp: dMLPNormed, dweight: g.up, dbias: nil, dout: UnsafeBufferPointer(dUp),
                        inp: UnsafeBufferPointer(normed), weight: w.up, tokens: n, inputs: c, outputs: f)
        progress()
        RMSNorm.backward(dinp: residual, dweight: g.postNorm, dout: UnsafeBufferPointer(dMLPNormed), inp: middle,
                         weight: w.postNorm, rstd: a.rstd2[l].prefix(n), tokens: n, channels: c)
        // Attention block (its dnormed is the forward's `projected` scratch, unused in the backward).
        let dAttention = a.dAttention.slice(0..<(n * qw))
        Linear.backward(dinp: dAttention, dweight: g.o, dbias: nil, dout: UnsafeBufferPointer(residual),
                        inp: a.attention[l].prefix(n * qw), weight: w.o, tokens: n, inputs: qw, outputs: c)
        progress()
        let dq = a.dq.slice(0..<(n * qw)), dk = a.dk.slice(0..<(n * kw)), dv = a.dv.slice(0..<(n * kw))
        Attention.backward(dq: dq, dk: dk, dv: dv, dout: UnsafeBufferPointer(dAttention),
                           q: a.q[l].prefix(n * qw), k: a.k[l].prefix(n * kw), v: a.v[l].prefix(n * kw),
                           out: a.attention[l].prefix(n * qw), lse: a.lse[l].prefix(n * shape.queryHeads),
                           boundaries: boundaries, shape: shape)
        progress()
        RoPE.apply(dq, positions: positions, heads: shape.queryHeads, table: rotary, inverse: true)
        RoPE.apply(dk, positions: positions, heads: shape.keyValueHeads, table: rotary, inverse: true)
        RMSNorm.forward(out: normed, rstd: a.rstd1[l].pointer, inp: x, weight: w.inputNorm, tokens: n, channels: c, epsilon: eps)
        let dAttentionNormed = a.projected.slice(0..<(n * c))
        Linear.backward(dinp: dAttentionNormed, dweight: g.q, dbias: g.qBias, dout: UnsafeBufferPointer(dq),
                        inp: UnsafeBufferPointer(normed), weight: w.q, tokens: n, inputs: c, outputs: qw)
        progress()
        Linear.backward(dinp: dAttentionNormed, dweight: g.k, dbias: g.kBias, dout: UnsafeBufferPointer(dk),
                        inp: UnsafeBufferPointer(normed), weight: w.k, tokens: n, inputs: c, outputs: kw)
        progress()
        Linear.backward(dinp: dAttentionNormed, dweight: g.v, dbias: g.vBias, dout: UnsafeBufferPointer(dv),
                        inp: UnsafeBufferPointer(normed), weight: w.v, tokens: n, inputs: c, outputs: kw)
        progress()
        RMSNorm.backward(dinp: residual, dweight: g.inputNorm, dout: UnsafeBufferPointer(dAttentionNormed), inp: x,
                         weight: w.inputNorm, rstd: a.rstd1[l].prefix(n), tokens: n, channels: c)
    }

    /// `out = x + y` elementwise.
    private func add(_ out: UnsafeMutableBufferPointer<Float>, _ x: UnsafeBufferPointer<Float>, _ y: UnsafeBufferPointer<Float>) {
        guard !out.isEmpty else { return }
        let o = out.baseAddress!, xb = x.baseAddress!, yb = y.baseAddress!
        for i in 0..<out.count { o[i] = xb[i] + yb[i] }
    }
}
