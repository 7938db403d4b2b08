import Kernels

/// Where each tensor of a decoder layer sits in the layer unit's flat buffer.
struct LayerTensors {
    var inputNorm: Range<Int>
    var q: Range<Int>, qBias: Range<Int>?
    var k: Range<Int>, kBias: Range<Int>?
    var v: Range<Int>, vBias: Range<Int>?
    var o: Range<Int>
    var postNorm: Range<Int>
    var gate: Range<Int>, up: Range<Int>, down: Range<Int>

    init(unit: ParameterUnit) {
        func find(_ suffix: String) -> Range<Int>? { unit.tensors.first { $0.name.hasSuffix(suffix) }?.range }
        inputNorm = find("input_layernorm.weight")!
        q = find("q_proj.weight")!; qBias = find("q_proj.bias")
        k = find("k_proj.weight")!; kBias = find("k_proj.bias")
        v = find("v_proj.weight")!; vBias = find("v_proj.bias")
        o = find("o_proj.weight")!
        postNorm = find("post_attention_layernorm.weight")!
        gate = find("gate_proj.weight")!; up = find("up_proj.weight")!; down = find("down_proj.weight")!
    }
}

/// Activation memory: what each layer caches for its backward, and shared scratch.
///
/// Per layer and token: the layer input (C), two rstd values, rotated q and k, v, the attention
/// output and its log-sum-exp, the residual after attention (C), the MLP gate and up projections (2F).
/// The normalised inputs and the SwiGLU product are recomputed in the backward instead of stored.
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

    init(config: ModelConfig, maxTokens n: Int) {
        let c = config.hiddenSize, f = config.intermediateSize, layers = config.numHiddenLayers
        let qw = config.numAttentionHeads * config.headDimension, kw = config.numKeyValueHeads * config.headDimension
        func perLayer(_ count: Int) -> [FloatBuffer] { (0..<layers).map { _ in FloatBuffer(count: count) } }
        layerInput = (0...layers).map { _ in FloatBuffer(count: n * c) }
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
    }

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
    func layerForward(_ l: Int, weights w: UnsafeBufferPointer<Float>, positions: UnsafeBufferPointer<Int32>,
                      boundaries: [Int], tokens n: Int) {
        let c = config.hiddenSize, f = config.intermediateSize, a = activations, t = layerTensors[l]
        let qw = shape.queryHeads * shape.headDimension, kw = shape.keyValueHeads * shape.headDimension
        let eps = Float(config.rmsNormEps)
        let x = a.layerInput[l].prefix(n * c), middle = a.middle[l].slice(0..<(n * c))
        let normed = a.normed.slice(0..<(n * c))
        // Attention block.
        RMSNorm.forward(out: normed, rstd: a.rstd1[l].pointer, inp: x, weight: w.view(t.inputNorm), tokens: n, channels: c, epsilon: eps)
        Linear.forward(out: a.q[l].pointer, inp: UnsafeBufferPointer(normed), weight: w.view(t.q), bias: t.qBias.map { w.view($0) },
                       tokens: n, inputs: c, outputs: qw)
        Linear.forward(out: a.k[l].pointer, inp: UnsafeBufferPointer(normed), weight: w.view(t.k), bias: t.kBias.map { w.view($0) },
                       tokens: n, inputs: c, outputs: kw)
        Linear.forward(out: a.v[l].pointer, inp: UnsafeBufferPointer(normed), weight: w.view(t.v), bias: t.vBias.map { w.view($0) },
                       tokens: n, inputs: c, outputs: kw)
        RoPE.apply(a.q[l].pointer, positions: positions, heads: shape.queryHeads, table: rotary)
        RoPE.apply(a.k[l].pointer, positions: positions, heads: shape.keyValueHeads, table: rotary)
        Attention.forward(out: a.attention[l].pointer, lse: a.lse[l].pointer,
                          q: a.q[l].prefix(n * qw), k: a.k[l].prefix(n * kw), v: a.v[l].prefix(n * kw),
                          boundaries: boundaries, shape: shape)
        Linear.forward(out: a.projected.pointer, inp: a.attention[l].prefix(n * qw), weight: w.view(t.o), bias: nil,
                       tokens: n, inputs: qw, outputs: c)
        add(middle, x, a.projected.prefix(n * c))
        // MLP block.
        RMSNorm.forward(out: normed, rstd: a.rstd2[l].pointer, inp: UnsafeBufferPointer(middle), weight: w.view(t.postNorm),
                        tokens: n, channels: c, epsilon: eps)
        Linear.forward(out: a.gate[l].pointer, inp: UnsafeBufferPointer(normed), weight: w.view(t.gate), bias: nil, tokens: n, inputs: c, outputs: f)
        Linear.forward(out: a.up[l].pointer, inp: UnsafeBufferPointer(normed), weight: w.view(t.up), bias: nil, tokens: n, inputs: c, outputs: f)
        SwiGLU.forward(out: a.product.pointer, gate: a.gate[l].prefix(n * f), up: a.up[l].prefix(n * f), count: n * f)
        Linear.forward(out: a.projected.pointer, inp: a.product.prefix(n * f), weight: w.view(t.down), bias: nil, tokens: n, inputs: f, outputs: c)
        add(a.layerInput[l + 1].slice(0..<(n * c)), UnsafeBufferPointer(middle), a.projected.prefix(n * c))
    }

    /// One decoder layer, backward: reads `dL/dy` from the residual gradient and leaves `dL/dx` there,
    /// accumulating every weight gradient into `g`.
    func layerBackward(_ l: Int, weights w: UnsafeBufferPointer<Float>, gradients g: UnsafeMutableBufferPointer<Float>,
                       positions: UnsafeBufferPointer<Int32>, boundaries: [Int], tokens n: Int) {
        let c = config.hiddenSize, f = config.intermediateSize, a = activations, t = layerTensors[l]
        let qw = shape.queryHeads * shape.headDimension, kw = shape.keyValueHeads * shape.headDimension
        let eps = Float(config.rmsNormEps)
        let x = a.layerInput[l].prefix(n * c), middle = a.middle[l].prefix(n * c)
        let normed = a.normed.slice(0..<(n * c)), dnormed = a.dnormed.slice(0..<(n * c))
        let residual = a.residualGradient.slice(0..<(n * c))
        // MLP block: recompute n₂(h) and the SwiGLU product.
        RMSNorm.forward(out: normed, rstd: a.rstd2[l].pointer, inp: middle, weight: w.view(t.postNorm), tokens: n, channels: c, epsilon: eps)
        SwiGLU.forward(out: a.product.pointer, gate: a.gate[l].prefix(n * f), up: a.up[l].prefix(n * f), count: n * f)
        let dProduct = a.dProduct.slice(0..<(n * f)), dGate = a.dGate.slice(0..<(n * f)), dUp = a.dUp.slice(0..<(n * f))
        dProduct.update(repeating: 0)
        Linear.backward(dinp: dProduct, dweight: g.view(t.down), dbias: nil, dout: UnsafeBufferPointer(residual),
                        inp: a.product.prefix(n * f), weight: w.view(t.down), tokens: n, inputs: f, outputs: c)
        dGate.update(repeating: 0); dUp.update(repeating: 0)
        SwiGLU.backward(dgate: dGate, dup: dUp, dout: UnsafeBufferPointer(dProduct), gate: a.gate[l].prefix(n * f),
                        up: a.up[l].prefix(n * f), count: n * f)
        dnormed.update(repeating: 0)
        Linear.backward(dinp: dnormed, dweight: g.view(t.gate), dbias: nil, dout: UnsafeBufferPointer(dGate),
                        inp: UnsafeBufferPointer(normed), weight: w.view(t.gate), tokens: n, inputs: c, outputs: f)
        Linear.backward(dinp: dnormed, dweight: g.view(t.up), dbias: nil, dout: UnsafeBufferPointer(dUp),
                        inp: UnsafeBufferPointer(normed), weight: w.view(t.up), tokens: n, inputs: c, outputs: f)
        RMSNorm.backward(dinp: residual, dweight: g.view(t.postNorm), dout: UnsafeBufferPointer(dnormed), inp: middle,
                         weight: w.view(t.postNorm), rstd: a.rstd2[l].prefix(n), tokens: n, channels: c)
        // Attention block.
        let dAttention = a.dAttention.slice(0..<(n * qw))
        dAttention.update(repeating: 0)
        Linear.backward(dinp: dAttention, dweight: g.view(t.o), dbias: nil, dout: UnsafeBufferPointer(residual),
                        inp: a.attention[l].prefix(n * qw), weight: w.view(t.o), tokens: n, inputs: qw, outputs: c)
        let dq = a.dq.slice(0..<(n * qw)), dk = a.dk.slice(0..<(n * kw)), dv = a.dv.slice(0..<(n * kw))
        dq.update(repeating: 0); dk.update(repeating: 0); dv.update(repeating: 0)
        Attention.backward(dq: dq, dk: dk, dv: dv, dout: UnsafeBufferPointer(dAttention),
                           q: a.q[l].prefix(n * qw), k: a.k[l].prefix(n * kw), v: a.v[l].prefix(n * kw),
                           out: a.attention[l].prefix(n * qw), lse: a.lse[l].prefix(n * shape.queryHeads),
                           boundaries: boundaries, shape: shape)
        RoPE.apply(dq, positions: positions, heads: shape.queryHeads, table: rotary, inverse: true)
        RoPE.apply(dk, positions: positions, heads: shape.keyValueHeads, table: rotary, inverse: true)
        RMSNorm.forward(out: normed, rstd: a.rstd1[l].pointer, inp: x, weight: w.view(t.inputNorm), tokens: n, channels: c, epsilon: eps)
        dnormed.update(repeating: 0)
        Linear.backward(dinp: dnormed, dweight: g.view(t.q), dbias: t.qBias.map { g.view($0) }, dout: UnsafeBufferPointer(dq),
                        inp: UnsafeBufferPointer(normed), weight: w.view(t.q), tokens: n, inputs: c, outputs: qw)
        Linear.backward(dinp: dnormed, dweight: g.view(t.k), dbias: t.kBias.map { g.view($0) }, dout: UnsafeBufferPointer(dk),
                        inp: UnsafeBufferPointer(normed), weight: w.view(t.k), tokens: n, inputs: c, outputs: kw)
        Linear.backward(dinp: dnormed, dweight: g.view(t.v), dbias: t.vBias.map { g.view($0) }, dout: UnsafeBufferPointer(dv),
                        inp: UnsafeBufferPointer(normed), weight: w.view(t.v), tokens: n, inputs: c, outputs: kw)
        RMSNorm.backward(dinp: residual, dweight: g.view(t.inputNorm), dout: UnsafeBufferPointer(dnormed), inp: x,
                         weight: w.view(t.inputNorm), rstd: a.rstd1[l].prefix(n), tokens: n, channels: c)
    }

    /// `out = x + y` elementwise.
    private func add(_ out: UnsafeMutableBufferPointer<Float>, _ x: UnsafeBufferPointer<Float>, _ y: UnsafeBufferPointer<Float>) {
        guard !out.isEmpty else { return }
        let o = out.baseAddress!, xb = x.baseAddress!, yb = y.baseAddress!
        for i in 0..<out.count { o[i] = xb[i] + yb[i] }
    }
}
