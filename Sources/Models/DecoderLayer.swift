import Kernels

extension LayerTensors {
    /// `q_proj`, `k_proj` and `v_proj`'s weights as one `(Hq·d + 2·Hkv·d, C)` matrix when they are
    /// adjacent in the unit (no q/k/v biases between them: Llama, SmolLM2; nil for Qwen2).
    public var qkv: Range<Int>? {
        q.upperBound == k.lowerBound && k.upperBound == v.lowerBound ? q.lowerBound..<v.upperBound : nil
    }
    /// `gate_proj` and `up_proj`'s weights as one `(2F, C)` matrix (always adjacent in HF order).
    public var gateUp: Range<Int> {
        precondition(gate.upperBound == up.lowerBound, "LayerTensors: gate_proj and up_proj are not adjacent")
        return gate.lowerBound..<up.upperBound
    }
}

/// A decoder layer's parameters, each tensor a view of the layer unit's gathered buffer at the
/// offsets of ``ParameterLayout/layer`` (valid only inside the ``UnitStore`` scope that lent the unit).
struct LayerWeights {
    let inputNorm, q, k, v, o, postNorm, gate, up, down: UnsafeBufferPointer<Float>
    let qBias, kBias, vBias: UnsafeBufferPointer<Float>?
    /// The stacked q/k/v weights (``LayerTensors/qkv``) and gate/up weights (``LayerTensors/gateUp``).
    let qkv: UnsafeBufferPointer<Float>?
    let gateUp: UnsafeBufferPointer<Float>

    init(_ unit: UnsafeBufferPointer<Float>, _ t: LayerTensors) {
        inputNorm = unit.view(t.inputNorm); postNorm = unit.view(t.postNorm)
        q = unit.view(t.q); k = unit.view(t.k); v = unit.view(t.v); o = unit.view(t.o)
        gate = unit.view(t.gate); up = unit.view(t.up); down = unit.view(t.down)
        qBias = t.qBias.map { unit.view($0) }; kBias = t.kBias.map { unit.view($0) }; vBias = t.vBias.map { unit.view($0) }
        qkv = t.qkv.map { unit.view($0) }; gateUp = unit.view(t.gateUp)
    }
}

/// A decoder layer's gradients, the same views into the unit's gradient buffer.
struct LayerGradients {
    let inputNorm, q, k, v, o, postNorm, gate, up, down: UnsafeMutableBufferPointer<Float>
    let qBias, kBias, vBias: UnsafeMutableBufferPointer<Float>?
    let qkv: UnsafeMutableBufferPointer<Float>?
    let gateUp: UnsafeMutableBufferPointer<Float>

    init(_ unit: UnsafeMutableBufferPointer<Float>, _ t: LayerTensors) {
        inputNorm = unit.view(t.inputNorm); postNorm = unit.view(t.postNorm)
        q = unit.view(t.q); k = unit.view(t.k); v = unit.view(t.v); o = unit.view(t.o)
        gate = unit.view(t.gate); up = unit.view(t.up); down = unit.view(t.down)
        qBias = t.qBias.map { unit.view($0) }; kBias = t.kBias.map { unit.view($0) }; vBias = t.vBias.map { unit.view($0) }
        qkv = t.qkv.map { unit.view($0) }; gateUp = unit.view(t.gateUp)
    }
}

/// Activation memory: what each layer caches for its backward, and shared scratch.
///
/// Per layer and token: the layer input (C), two rstd values, rotated q and k, v, the attention
/// output and its log-sum-exp, the residual after attention (C), the MLP's gate and up projections
/// as one `(N, 2F)` row each (`[gate | up]`, the output of one gemm; rows ``SwiGLU/rowStride(width:)``
/// floats apart: 32 of padding where 2F is a multiple of 256). The normalised inputs and the
/// SwiGLU product are recomputed in the backward instead of stored; the backward overwrites the
/// layer's `gateUp` with its gradient (it is read by nothing after that).
/// An inference-only model caches one layer (`cachedLayers` 1) and two layer inputs, reused in turn.
///
/// Scratch shared by all layers, per token: `normed` (C), `product` (F: the SwiGLU output, in the
/// backward then its gradient, in place), `qkv` (`Hq·d + 2·Hkv·d`, only when q/k/v are one gemm:
/// its output before the split into `q`, `k`, `v`, and in the backward their gathered gradient),
/// `dnormed` (C), `residualGradient` (C), `dAttention` and `dq` (`Hq·d` each), `dk` and `dv`
/// (`Hkv·d` each), and `finalRstd` (1). Only `dq`, `dk`, `dv` are accumulated into (by the attention
/// backward) and zeroed once per layer; every other gradient is written by a gemm with `beta = 0`.
final class Activations {
    let layerInput: [FloatBuffer]     // L + 1 buffers of (N, C): input of each layer, and the final hidden state
    let rstd1: [FloatBuffer], rstd2: [FloatBuffer]
    let q: [FloatBuffer], k: [FloatBuffer], v: [FloatBuffer]
    let attention: [FloatBuffer], lse: [FloatBuffer]
    let middle: [FloatBuffer]
    let gateUp: [FloatBuffer]
    let finalRstd: FloatBuffer
    // Scratch shared by all layers.
    let normed: FloatBuffer, product: FloatBuffer, qkv: FloatBuffer?
    let dnormed: FloatBuffer, residualGradient: FloatBuffer
    let dAttention: FloatBuffer, dq: FloatBuffer, dk: FloatBuffer, dv: FloatBuffer

    /// - Parameter fusedQKV: whether q/k/v are one gemm (``LayerTensors/qkv`` is not nil): allocates `qkv`.
    init(config: ModelConfig, maxTokens n: Int, cachedLayers layers: Int, fusedQKV: Bool) {
        let c = config.hiddenSize, f = config.intermediateSize
        let qw = config.numAttentionHeads * config.headDimension, kw = config.numKeyValueHeads * config.headDimension
        func perLayer(_ count: Int) -> [FloatBuffer] { (0..<layers).map { _ in FloatBuffer(count: count) } }
        layerInput = (0...max(layers, 1)).map { _ in FloatBuffer(count: n * c) }
        rstd1 = perLayer(n); rstd2 = perLayer(n)
        q = perLayer(n * qw); k = perLayer(n * kw); v = perLayer(n * kw)
        attention = perLayer(n * qw); lse = perLayer(n * config.numAttentionHeads)
        middle = perLayer(n * c)
        gateUpStride = SwiGLU.rowStride(width: f)
        gateUp = perLayer(n * gateUpStride)
        finalRstd = FloatBuffer(count: n)
        normed = FloatBuffer(count: n * c); product = FloatBuffer(count: n * f)
        qkv = fusedQKV ? FloatBuffer(count: n * (qw + 2 * kw)) : nil
        dnormed = FloatBuffer(count: n * c); residualGradient = FloatBuffer(count: n * c)
        dAttention = FloatBuffer(count: n * qw); dq = FloatBuffer(count: n * qw)
        dk = FloatBuffer(count: n * kw); dv = FloatBuffer(count: n * kw)
        maxTokens = n
    }

    let maxTokens: Int
    /// The row stride of each `gateUp` cache, in floats (``SwiGLU/rowStride(width:)``).
    let gateUpStride: Int

    var bytes: Int {
        let cached = [layerInput, rstd1, rstd2, q, k, v, attention, lse, middle, gateUp].joined().reduce(0) { $0 + $1.bytes }
        let scratch = [finalRstd, normed, product, dnormed, residualGradient, dAttention, dq, dk, dv]
            .reduce(qkv?.bytes ?? 0) { $0 + $1.bytes }
        return cached + scratch
    }
}

extension DecoderModel {
    /// One decoder layer, forward:
    /// `h = x + Wo·attn(rope(Wq·n₁(x)), rope(Wk·n₁(x)), Wv·n₁(x))`, `y = h + Wd·(silu(Wg·n₂(h)) ⊙ Wu·n₂(h))`.
    ///
    /// `Wq;Wk;Wv` is one gemm (then split into q, k, v) when the weights are adjacent, `Wg;Wu` always;
    /// the residual adds are the output gemms' `beta = 1` onto a copy of the residual stream.
    func layerForward(_ l: Int, weights w: LayerWeights, positions: UnsafeBufferPointer<Int32>,
                      boundaries: [Int], tokens n: Int) {
        let c = config.hiddenSize, f = config.intermediateSize, a = activations, s = slot(l)
        let qw = shape.queryHeads * shape.headDimension, kw = shape.keyValueHeads * shape.headDimension
        let eps = Float(config.rmsNormEps)
        let x = input(l).prefix(n * c), middle = a.middle[s].slice(0..<(n * c))
        let normed = a.normed.slice(0..<(n * c))
        let q = a.q[s], k = a.k[s], v = a.v[s], attention = a.attention[s], gateUp = a.gateUp[s]
        // Attention block: (N, C) → q (N, Hq·d), k and v (N, Hkv·d).
        RMSNorm.forward(out: normed, rstd: a.rstd1[s].pointer, inp: x, weight: w.inputNorm, tokens: n, channels: c, epsilon: eps)
        if let wqkv = w.qkv, let qkv = a.qkv {
            Linear.forward(out: qkv.pointer, inp: UnsafeBufferPointer(normed), weight: wqkv, bias: nil,
                           tokens: n, inputs: c, outputs: qw + 2 * kw)
            progress()
            Self.split(qkv.prefix(n * (qw + 2 * kw)), into: [(q.pointer, qw), (k.pointer, kw), (v.pointer, kw)], rows: n)
        } else {
            Linear.forward(out: q.pointer, inp: UnsafeBufferPointer(normed), weight: w.q, bias: w.qBias, tokens: n, inputs: c, outputs: qw)
            progress()
            Linear.forward(out: k.pointer, inp: UnsafeBufferPointer(normed), weight: w.k, bias: w.kBias, tokens: n, inputs: c, outputs: kw)
            progress()
            Linear.forward(out: v.pointer, inp: UnsafeBufferPointer(normed), weight: w.v, bias: w.vBias, tokens: n, inputs: c, outputs: kw)
            progress()
        }
        RoPE.apply(q.pointer, positions: positions, heads: shape.queryHeads, table: rotary)
        RoPE.apply(k.pointer, positions: positions, heads: shape.keyValueHeads, table: rotary)
        Attention.forward(out: attention.pointer, lse: a.lse[s].pointer,
                          q: q.prefix(n * qw), k: k.prefix(n * kw), v: v.prefix(n * kw),
                          boundaries: boundaries, shape: shape)
        progress()
        // h = x + attention · Woᵀ.
        Self.copy(middle, x)
        Linear.forward(out: middle, inp: attention.prefix(n * qw), weight: w.o, bias: nil,
                       tokens: n, inputs: qw, outputs: c, accumulate: true)
        progress()
        // MLP block: gateUp (N, 2F) in one gemm, product (N, F), y = h + product · Wdᵀ.
        RMSNorm.forward(out: normed, rstd: a.rstd2[s].pointer, inp: UnsafeBufferPointer(middle), weight: w.postNorm,
                        tokens: n, channels: c, epsilon: eps)
        Linear.forward(out: gateUp.pointer, inp: UnsafeBufferPointer(normed), weight: w.gateUp, bias: nil,
                       tokens: n, inputs: c, outputs: 2 * f, outputStride: a.gateUpStride)
        progress()
        SwiGLU.forward(out: a.product.pointer, gateUp: gateUp.prefix(n * a.gateUpStride), tokens: n, width: f,
                       stride: a.gateUpStride)
        let y = input(l + 1).slice(0..<(n * c))
        Self.copy(y, UnsafeBufferPointer(middle))
        // oneDNN threads this shape (k = F ≫ C) poorly: one single-threaded gemm per thread instead.
        Linear.forward(out: y, inp: a.product.prefix(n * f), weight: w.down, bias: nil,
                       tokens: n, inputs: f, outputs: c, accumulate: true, splitTokens: true)
        progress()
    }

    /// One decoder layer, backward: reads `dL/dy` from the residual gradient and leaves `dL/dx` there,
    /// accumulating every weight gradient into `g`.
    ///
    /// Weight gradients and the residual gradient are accumulated (`+=`); the scratch gradients are
    /// written by their gemm (`beta = 0`) except `dq`, `dk`, `dv`, which the attention backward
    /// accumulates into and which are zeroed first. The layer's cached `gateUp` becomes its gradient.
    func layerBackward(_ l: Int, weights w: LayerWeights, gradients g: LayerGradients,
                       positions: UnsafeBufferPointer<Int32>, boundaries: [Int], tokens n: Int) {
        let c = config.hiddenSize, f = config.intermediateSize, a = activations
        let qw = shape.queryHeads * shape.headDimension, kw = shape.keyValueHeads * shape.headDimension
        let eps = Float(config.rmsNormEps)
        let x = a.layerInput[l].prefix(n * c), middle = a.middle[l].prefix(n * c)
        let normed = a.normed.slice(0..<(n * c)), dnormed = a.dnormed.slice(0..<(n * c))
        let residual = a.residualGradient.slice(0..<(n * c))
        // MLP block: recompute n₂(h); the product's gradient dy · Wd, then one SwiGLU pass turns it and
        // the cached gateUp into gateUp's gradient and the recomputed product; then dWd += dyᵀ · product.
        let gateUp = a.gateUp[l].slice(0..<(n * a.gateUpStride)), product = a.product.slice(0..<(n * f))
        RMSNorm.forward(out: normed, rstd: a.rstd2[l].pointer, inp: middle, weight: w.postNorm, tokens: n, channels: c, epsilon: eps)
        Linear.inputGradient(dinp: product, dout: UnsafeBufferPointer(residual), weight: w.down,
                             tokens: n, inputs: f, outputs: c, accumulate: false)
        SwiGLU.backward(product: product, gateUp: gateUp, tokens: n, width: f, stride: a.gateUpStride)
        Linear.backward(dinp: nil, dweight: g.down, dbias: nil, dout: UnsafeBufferPointer(residual),
                        inp: UnsafeBufferPointer(product), weight: w.down, tokens: n, inputs: f, outputs: c)
        progress()
        Linear.backward(dinp: dnormed, dweight: g.gateUp, dbias: nil, dout: UnsafeBufferPointer(gateUp),
                        inp: UnsafeBufferPointer(normed), weight: w.gateUp, tokens: n, inputs: c, outputs: 2 * f,
                        outputGradientStride: a.gateUpStride, accumulateInputGradient: false)
        progress()
        RMSNorm.backward(dinp: residual, dweight: g.postNorm, dout: UnsafeBufferPointer(dnormed), inp: middle,
                         weight: w.postNorm, rstd: a.rstd2[l].prefix(n), tokens: n, channels: c)
        // Attention block.
        let dAttention = a.dAttention.slice(0..<(n * qw))
        Linear.backward(dinp: dAttention, dweight: g.o, dbias: nil, dout: UnsafeBufferPointer(residual),
                        inp: a.attention[l].prefix(n * qw), weight: w.o, tokens: n, inputs: qw, outputs: c,
                        accumulateInputGradient: false)
        progress()
        let dq = a.dq.slice(0..<(n * qw)), dk = a.dk.slice(0..<(n * kw)), dv = a.dv.slice(0..<(n * kw))
        dq.update(repeating: 0); dk.update(repeating: 0); dv.update(repeating: 0)
        Attention.backward(dq: dq, dk: dk, dv: dv, dout: UnsafeBufferPointer(dAttention),
                           q: a.q[l].prefix(n * qw), k: a.k[l].prefix(n * kw), v: a.v[l].prefix(n * kw),
                           out: a.attention[l].prefix(n * qw), lse: a.lse[l].prefix(n * shape.queryHeads),
                           boundaries: boundaries, shape: shape)
        progress()
        progress()
        RoPE.apply(dq, positions: positions, heads: shape.queryHeads, table: rotary, inverse: true)
        RoPE.apply(dk, positions: positions, heads: shape.keyValueHeads, table: rotary, inverse: true)
        RMSNorm.forward(out: normed, rstd: a.rstd1[l].pointer, inp: x, weight: w.inputNorm, tokens: n, channels: c, epsilon: eps)
        if let wqkv = w.qkv, let gqkv = g.qkv, let qkv = a.qkv {
            let dqkv = qkv.slice(0..<(n * (qw + 2 * kw)))
            Self.gather([(UnsafeBufferPointer(dq), qw), (UnsafeBufferPointer(dk), kw), (UnsafeBufferPointer(dv), kw)],
                        into: dqkv, rows: n)
            Linear.backward(dinp: dnormed, dweight: gqkv, dbias: nil, dout: UnsafeBufferPointer(dqkv),
                            inp: UnsafeBufferPointer(normed), weight: wqkv, tokens: n, inputs: c, outputs: qw + 2 * kw,
                            accumulateInputGradient: false)
            progress()
        } else {
            Linear.backward(dinp: dnormed, dweight: g.q, dbias: g.qBias, dout: UnsafeBufferPointer(dq),
                            inp: UnsafeBufferPointer(normed), weight: w.q, tokens: n, inputs: c, outputs: qw,
                            accumulateInputGradient: false)
            progress()
            Linear.backward(dinp: dnormed, dweight: g.k, dbias: g.kBias, dout: UnsafeBufferPointer(dk),
                            inp: UnsafeBufferPointer(normed), weight: w.k, tokens: n, inputs: c, outputs: kw)
            progress()
            Linear.backward(dinp: dnormed, dweight: g.v, dbias: g.vBias, dout: UnsafeBufferPointer(dv),
                            inp: UnsafeBufferPointer(normed), weight: w.v, tokens: n, inputs: c, outputs: kw)
            progress()
        }
        RMSNorm.backward(dinp: residual, dweight: g.inputNorm, dout: UnsafeBufferPointer(dnormed), inp: x,
                         weight: w.inputNorm, rstd: a.rstd1[l].prefix(n), tokens: n, channels: c)
    }

    /// Floats one thread copies at the least (a smaller copy is not worth a dispatch).
    private static let copyGrain = 1 << 16

    /// `out = x`, split over the rank's threads.
    private static func copy(_ out: UnsafeMutableBufferPointer<Float>, _ x: UnsafeBufferPointer<Float>) {
        guard !out.isEmpty else { return }
        let o = out.baseAddress!, xb = x.baseAddress!
        Parallel.forEach(count: out.count, grain: copyGrain) { range in
            (o + range.lowerBound).update(from: xb + range.lowerBound, count: range.count)
        }
    }

    /// Splits each row of `fused (rows, Σ width)` into the parts' own `(rows, width)` buffers, in order.
    private static func split(_ fused: UnsafeBufferPointer<Float>, into parts: [(UnsafeMutableBufferPointer<Float>, Int)], rows n: Int) {
        let total = parts.reduce(0) { $0 + $1.1 }
        precondition(fused.count >= n * total && parts.allSatisfy { $0.0.count >= n * $0.1 }, "split: buffers do not fit")
        guard n > 0 else { return }
        let src = fused.baseAddress!, destinations = parts.map { ($0.0.baseAddress!, $0.1) }
        Parallel.forEach(count: n, grain: max(1, copyGrain / total)) { rows in
            for t in rows {
                var from = src + t * total
                for (destination, width) in destinations {
                    (destination + t * width).update(from: from, count: width)
                    from += width
                }
            }
        }
    }

    /// Gathers the parts' `(rows, width)` buffers into the rows of `fused (rows, Σ width)`, in order.
    private static func gather(_ parts: [(UnsafeBufferPointer<Float>, Int)], into fused: UnsafeMutableBufferPointer<Float>, rows n: Int) {
        let total = parts.reduce(0) { $0 + $1.1 }
        precondition(fused.count >= n * total && parts.allSatisfy { $0.0.count >= n * $0.1 }, "gather: buffers do not fit")
        guard n > 0 else { return }
        let destination = fused.baseAddress!, sources = parts.map { ($0.0.baseAddress!, $0.1) }
        Parallel.forEach(count: n, grain: max(1, copyGrain / total)) { rows in
            for t in rows {
                var to = destination + t * total
                for (source, width) in sources {
                    to.update(from: source + t * width, count: width)
                    to += width
                }
            }
        }
    }
}
