import Testing
import TestSupport
import Glibc
@testable import Kernels

/// Finite-difference checks of every layer's backward (see `expectGradient` for the tolerance).
@Suite struct LayerGradientTests {
    @Test func linearWithBias() {
        let n = 5, i = 7, o = 6
        var random = TestRandom(seed: 1)
        var x = random.normals(n * i), w = random.normals(o * i, std: 0.5), b = random.normals(o)
        let r = random.normals(n * o)
        func forward(_ x: [Float], _ w: [Float], _ b: [Float]) -> [Float] {
            var out = [Float](repeating: 0, count: n * o)
            out.withUnsafeMutableBufferPointer { out in
                x.withUnsafeBufferPointer { x in w.withUnsafeBufferPointer { w in b.withUnsafeBufferPointer { b in
                    Linear.forward(out: out, inp: x, weight: w, bias: b, tokens: n, inputs: i, outputs: o)
                } } }
            }
            return out
        }
        var dx = [Float](repeating: 0, count: n * i), dw = [Float](repeating: 0, count: o * i), db = [Float](repeating: 0, count: o)
        r.withUnsafeBufferPointer { r in x.withUnsafeBufferPointer { xp in w.withUnsafeBufferPointer { wp in
            dx.withUnsafeMutableBufferPointer { dx in dw.withUnsafeMutableBufferPointer { dw in db.withUnsafeMutableBufferPointer { db in
                Linear.backward(dinp: dx, dweight: dw, dbias: db, dout: r, inp: xp, weight: wp, tokens: n, inputs: i, outputs: o)
            } } }
        } } }
        let (w0, b0, x0) = (w, b, x)
        expectGradient("linear input", at: &x, analytic: dx) { weightedSum(forward($0, w0, b0), r) }
        expectGradient("linear weight", at: &w, analytic: dw) { weightedSum(forward(x0, $0, b0), r) }
        expectGradient("linear bias", at: &b, analytic: db) { weightedSum(forward(x0, w0, $0), r) }
        // The forward itself against a direct sum.
        let out = forward(x, w, b)
        var maxError: Float = 0
        for t in 0..<n { for j in 0..<o {
            var s = b[j]; for k in 0..<i { s += x[t * i + k] * w[j * i + k] }
            maxError = max(maxError, abs(s - out[t * o + j]))
        } }
        #expect(maxError < 1e-5, "linear forward differs from the direct sum by \(maxError)")
    }

    @Test func rmsNorm() {
        let n = 4, c = 9
        var random = TestRandom(seed: 2)
        var x = random.normals(n * c), w = random.normals(c)
        let r = random.normals(n * c)
        func forward(_ x: [Float], _ w: [Float]) -> [Float] {
            var out = [Float](repeating: 0, count: n * c), rstd = [Float](repeating: 0, count: n)
            out.withUnsafeMutableBufferPointer { out in rstd.withUnsafeMutableBufferPointer { rstd in
                x.withUnsafeBufferPointer { x in w.withUnsafeBufferPointer { w in
                    RMSNorm.forward(out: out, rstd: rstd, inp: x, weight: w, tokens: n, channels: c, epsilon: 1e-5)
                } }
            } }
            return out
        }
        var rstd = [Float](repeating: 0, count: n), scratch = [Float](repeating: 0, count: n * c)
        scratch.withUnsafeMutableBufferPointer { o in rstd.withUnsafeMutableBufferPointer { rs in x.withUnsafeBufferPointer { xp in w.withUnsafeBufferPointer { wp in
            RMSNorm.forward(out: o, rstd: rs, inp: xp, weight: wp, tokens: n, channels: c, epsilon: 1e-5)
        } } } }
        var dx = [Float](repeating: 0, count: n * c), dw = [Float](repeating: 0, count: c)
        dx.withUnsafeMutableBufferPointer { dx in dw.withUnsafeMutableBufferPointer { dw in
            r.withUnsafeBufferPointer { r in x.withUnsafeBufferPointer { xp in w.withUnsafeBufferPointer { wp in rstd.withUnsafeBufferPointer { rs in
                RMSNorm.backward(dinp: dx, dweight: dw, dout: r, inp: xp, weight: wp, rstd: rs, tokens: n, channels: c)
            } } } }
        } }
        let (x0, w0) = (x, w)
        expectGradient("rmsnorm input", at: &x, analytic: dx) { weightedSum(forward($0, w0), r) }
        expectGradient("rmsnorm weight", at: &w, analytic: dw) { weightedSum(forward(x0, $0), r) }
    }

    @Test func swiGLU() {
        let count = 40
        var random = TestRandom(seed: 3)
        var g = random.normals(count, std: 2), u = random.normals(count)
        let r = random.normals(count)
        func forward(_ g: [Float], _ u: [Float]) -> [Float] {
            var out = [Float](repeating: 0, count: count)
            out.withUnsafeMutableBufferPointer { o in g.withUnsafeBufferPointer { gp in u.withUnsafeBufferPointer { up in
                SwiGLU.forward(out: o, gate: gp, up: up, count: count)
            } } }
            return out
        }
        var dg = [Float](repeating: 0, count: count), du = [Float](repeating: 0, count: count)
        dg.withUnsafeMutableBufferPointer { dg in du.withUnsafeMutableBufferPointer { du in
            r.withUnsafeBufferPointer { r in g.withUnsafeBufferPointer { gp in u.withUnsafeBufferPointer { up in
                SwiGLU.backward(dgate: dg, dup: du, dout: r, gate: gp, up: up, count: count)
            } } }
        } }
        let (g0, u0) = (g, u)
        expectGradient("swiglu gate", at: &g, analytic: dg) { weightedSum(forward($0, u0), r) }
        expectGradient("swiglu up", at: &u, analytic: du) { weightedSum(forward(g0, $0), r) }
    }

    /// The fused `(N, 2F)` layout: its forward equals the separate one's, and its two in-place
    /// backward passes give the finite-difference gradient (and the separate kernel's), while the
    /// first pass recomputes the forward's product.
    /// F = 13: each row runs the eight-lane body and a scalar tail, and the separate layout's flat
    /// 65 elements split into lanes at other places, so equal bits mean lane and tail agree.
    @Test func swiGLUFused() {
        let n = 5, f = 13
        var random = TestRandom(seed: 13)
        var gu = random.normals(n * 2 * f, std: 2)
        let r = random.normals(n * f)
        func forward(_ gu: [Float]) -> [Float] {
            var out = [Float](repeating: 0, count: n * f)
            out.withUnsafeMutableBufferPointer { o in gu.withUnsafeBufferPointer { gu in
                SwiGLU.forward(out: o, gateUp: gu, tokens: n, width: f)
            } }
            return out
        }
        // The separate layout, row by row.
        var gate: [Float] = [], up: [Float] = []
        for t in 0..<n {
            gate += gu[(t * 2 * f)..<(t * 2 * f + f)]
            up += gu[(t * 2 * f + f)..<(t * 2 * f + 2 * f)]
        }
        var separate = [Float](repeating: 0, count: n * f)
        var dg = [Float](repeating: 0, count: n * f), du = [Float](repeating: 0, count: n * f)
        separate.withUnsafeMutableBufferPointer { o in gate.withUnsafeBufferPointer { g in up.withUnsafeBufferPointer { u in
            r.withUnsafeBufferPointer { r in dg.withUnsafeMutableBufferPointer { dg in du.withUnsafeMutableBufferPointer { du in
                SwiGLU.forward(out: o, gate: g, up: u, count: n * f)
                SwiGLU.backward(dgate: dg, dup: du, dout: r, gate: g, up: u, count: n * f)
            } } }
        } } }
        let fused = forward(gu)
        #expect(fused == separate, "fused SwiGLU forward differs from the separate layout")
        var product = r, gradient = gu   // in: the output's gradient; out: the recomputed product
        product.withUnsafeMutableBufferPointer { p in gradient.withUnsafeMutableBufferPointer { g in
            SwiGLU.backward(product: p, gateUp: g, tokens: n, width: f)
        } }
        #expect(product == fused, "the backward's recomputed product differs from the forward")
        var maxDifference: Float = 0
        for t in 0..<n {
            for j in 0..<f {
                let row = t * 2 * f, dgate: Float = gradient[row + j] - dg[t * f + j], dup: Float = gradient[row + f + j] - du[t * f + j]
                maxDifference = max(maxDifference, abs(dgate), abs(dup))
            }
        }
        #expect(maxDifference < 1e-5, "fused SwiGLU gradient differs from the separate kernel's by \(maxDifference)")
        expectGradient("swiglu fused", at: &gu, analytic: gradient) { weightedSum(forward($0), r) }
    }

    /// `Linear`'s write and accumulate modes: `accumulate` adds to `out`, and with
    /// `accumulateInputGradient: false` the input gradient overwrites `dinp`, even when `dinp` is `inp`.
    /// Rows of the gate/up cache kept `stride` floats apart (``SwiGLU/rowStride(width:)`` pads them
    /// where 2F is a multiple of 256): the gemms that write and read it (`Linear`'s `outputStride`,
    /// `outputGradientStride`) and the fused SwiGLU forward and backward give the bits of the packed layout and
    /// never touch the padding. Also the stride rule itself.
    @Test func paddedGateUpRows() {
        #expect(SwiGLU.rowStride(width: 1536) == 3104 && SwiGLU.rowStride(width: 128) == 288 && SwiGLU.rowStride(width: 160) == 320)
        let n = 6, c = 5, f = 11, stride = 2 * f + 3
        var random = TestRandom(seed: 14)
        let x = random.normals(n * c), w = random.normals(2 * f * c, std: 0.5), dy = random.normals(n * f)
        let pad: Float = -7.5
        // Packed: gateUp (N, 2F); padded: the same rows `stride` apart, the gaps filled with `pad`.
        func run(stride: Int) -> (gateUp: [Float], product: [Float], dx: [Float], dw: [Float]) {
            var gateUp = [Float](repeating: pad, count: (n - 1) * stride + 2 * f)
            var product = [Float](repeating: 0, count: n * f), recomputed = product
            var dx = [Float](repeating: 0, count: n * c), dw = [Float](repeating: 0.25, count: 2 * f * c)
            x.withUnsafeBufferPointer { x in w.withUnsafeBufferPointer { w in dy.withUnsafeBufferPointer { dy in
                gateUp.withUnsafeMutableBufferPointer { gu in product.withUnsafeMutableBufferPointer { p in
                    recomputed.withUnsafeMutableBufferPointer { rp in dx.withUnsafeMutableBufferPointer { dx in dw.withUnsafeMutableBufferPointer { dw in
                        Linear.forward(out: gu, inp: x, weight: w, bias: nil, tokens: n, inputs: c, outputs: 2 * f, outputStride: stride)
                        SwiGLU.forward(out: p, gateUp: UnsafeBufferPointer(gu), tokens: n, width: f, stride: stride)
                        _ = rp.update(fromContentsOf: dy)
                        SwiGLU.backward(product: rp, gateUp: gu, tokens: n, width: f, stride: stride)
                        Linear.backward(dinp: dx, dweight: dw, dbias: nil, dout: UnsafeBufferPointer(gu), inp: x, weight: w,
                                        tokens: n, inputs: c, outputs: 2 * f, outputGradientStride: stride, accumulateInputGradient: false)
                    } } }
                } }
            } } }
            #expect(recomputed == product, "stride \(stride): the backward's recomputed product differs from the forward's")
            // The rows, packed.
            let rows = (0..<n).flatMap { gateUp[($0 * stride)..<($0 * stride + 2 * f)] }
            for t in 0..<(n - 1) {
                #expect(gateUp[(t * stride + 2 * f)..<((t + 1) * stride)].allSatisfy { $0 == pad }, "stride \(stride): row \(t)'s padding was written")
            }
            return (rows, product, dx, dw)
        }
        let packed = run(stride: 2 * f), padded = run(stride: stride)
        #expect(packed.gateUp == padded.gateUp && packed.product == padded.product, "gate/up rows or the product differ with padded rows")
        #expect(packed.dx == padded.dx && packed.dw == padded.dw, "the gate/up gemms' gradients differ with padded rows")
    }

    @Test func linearWriteAndAccumulate() {
        let n = 4, i = 6, o = 5
        var random = TestRandom(seed: 14)
        let x = random.normals(n * i), w = random.normals(o * i), r = random.normals(n * o), base = random.normals(n * o)
        var plain = [Float](repeating: 0, count: n * o), accumulated = base
        x.withUnsafeBufferPointer { x in w.withUnsafeBufferPointer { w in
            plain.withUnsafeMutableBufferPointer { Linear.forward(out: $0, inp: x, weight: w, bias: nil, tokens: n, inputs: i, outputs: o) }
            accumulated.withUnsafeMutableBufferPointer {
                Linear.forward(out: $0, inp: x, weight: w, bias: nil, tokens: n, inputs: i, outputs: o, accumulate: true)
            }
        } }
        var accumulateError: Float = 0
        for index in 0..<(n * o) { accumulateError = max(accumulateError, abs(accumulated[index] - (base[index] + plain[index]))) }
        #expect(accumulateError < 1e-5, "accumulate is not out += inp · Wᵀ (off by \(accumulateError))")
        // Reference: accumulate into zeros. Then: write over garbage, and write over the input itself.
        var dxReference = [Float](repeating: 0, count: n * i), dwReference = [Float](repeating: 0, count: o * i)
        var dxWritten = [Float](repeating: 7, count: n * i), dwWritten = [Float](repeating: 0, count: o * i)
        var aliased = x, dwAliased = [Float](repeating: 0, count: o * i)
        r.withUnsafeBufferPointer { r in x.withUnsafeBufferPointer { xp in w.withUnsafeBufferPointer { wp in
            dxReference.withUnsafeMutableBufferPointer { dx in dwReference.withUnsafeMutableBufferPointer { dw in
                Linear.backward(dinp: dx, dweight: dw, dbias: nil, dout: r, inp: xp, weight: wp, tokens: n, inputs: i, outputs: o)
            } }
            dxWritten.withUnsafeMutableBufferPointer { dx in dwWritten.withUnsafeMutableBufferPointer { dw in
                Linear.backward(dinp: dx, dweight: dw, dbias: nil, dout: r, inp: xp, weight: wp, tokens: n, inputs: i, outputs: o,
                                accumulateInputGradient: false)
            } }
            aliased.withUnsafeMutableBufferPointer { a in dwAliased.withUnsafeMutableBufferPointer { dw in
                Linear.backward(dinp: a, dweight: dw, dbias: nil, dout: r, inp: UnsafeBufferPointer(a), weight: wp,
                                tokens: n, inputs: i, outputs: o, accumulateInputGradient: false)
            } }
        } } }
        #expect(dxWritten == dxReference && dwWritten == dwReference, "written input gradient differs from the accumulated one")
        #expect(aliased == dxReference && dwAliased == dwReference, "dinp aliasing inp changed the gradients")
    }

    /// d = 20: each head's ten pairs run eight lanes and a scalar tail of two; the forward is also
    /// checked bit for bit against the rotation written out per element (the table's cos and sin).
    @Test func rope() {
        let n = 6, heads = 3, d = 20
        let table = RotaryTable(headDimension: d, maxPositions: 16, base: 10000)
        let positions: [Int32] = [0, 1, 2, 0, 1, 5]
        var random = TestRandom(seed: 4)
        var x = random.normals(n * heads * d)
        let r = random.normals(n * heads * d)
        func forward(_ x: [Float]) -> [Float] {
            var y = x
            y.withUnsafeMutableBufferPointer { y in positions.withUnsafeBufferPointer { p in RoPE.apply(y, positions: p, heads: heads, table: table) } }
            return y
        }
        var dx = r
        dx.withUnsafeMutableBufferPointer { y in positions.withUnsafeBufferPointer { p in RoPE.apply(y, positions: p, heads: heads, table: table, inverse: true) } }
        expectGradient("rope", at: &x, analytic: dx) { weightedSum(forward($0), r) }
        // Position 0 is the identity; the rotation keeps each pair's norm.
        let y = forward(x)
        var written = x
        for t in 0..<n {
            for h in 0..<heads {
                for i in 0..<(d / 2) {
                    let c = table.cosines[Int(positions[t]) * d / 2 + i], sn = table.sines[Int(positions[t]) * d / 2 + i]
                    let x1 = x[(t * heads + h) * d + i], x2 = x[(t * heads + h) * d + i + d / 2]
                    written[(t * heads + h) * d + i] = x1 * c - x2 * sn
                    written[(t * heads + h) * d + i + d / 2] = x2 * c + x1 * sn
                }
            }
        }
        #expect(y == written, "RoPE's lanes differ from the rotation written out per element")
        for i in 0..<(heads * d) { #expect(abs(y[i] - x[i]) < 1e-6, "rope moved position 0 at \(i)") }
    }

    @Test func embedding() {
        let v = 10, c = 4
        let tokens: [Int32] = [3, 1, 3, 9, 0]
        var random = TestRandom(seed: 5)
        var w = random.normals(v * c)
        let r = random.normals(tokens.count * c)
        func forward(_ w: [Float]) -> [Float] {
            var out = [Float](repeating: 0, count: tokens.count * c)
            out.withUnsafeMutableBufferPointer { o in tokens.withUnsafeBufferPointer { t in w.withUnsafeBufferPointer { wp in
                Embedding.forward(out: o, tokens: t, weight: wp, vocabulary: v, channels: c)
            } } }
            return out
        }
        var dw = [Float](repeating: 0, count: v * c)
        dw.withUnsafeMutableBufferPointer { dw in r.withUnsafeBufferPointer { r in tokens.withUnsafeBufferPointer { t in
            Embedding.backward(dweight: dw, dout: r, tokens: t, vocabulary: v, channels: c)
        } } }
        expectGradient("embedding", at: &w, analytic: dw) { weightedSum(forward($0), r) }
    }

    /// V 11, and V 256, whose logits rows are padded (``Classifier/logitsStride(vocabulary:)``).
    @Test(arguments: [11, 256]) func classifierLossAndGradients(v: Int) {
        let n = 7, c = 6
        let targets: [Int32] = [3, -100, 10, 0, -100, 5, Int32(v - 1)]
        var random = TestRandom(seed: 6)
        var h = random.normals(n * c), w = random.normals(v * c)
        let scale: Float = 1 / 5
        func loss(_ h: [Float], _ w: [Float]) -> Double {
            h.withUnsafeBufferPointer { hp in w.withUnsafeBufferPointer { wp in targets.withUnsafeBufferPointer { t in
                Classifier.forwardBackward(hidden: hp, weight: wp, targets: t, vocabulary: v, channels: c, scale: scale,
                                           dhidden: nil, dweight: nil).lossSum * Double(scale)
            } } }
        }
        var dh = [Float](repeating: 0, count: n * c), dw = [Float](repeating: 0, count: v * c)
        let result = dh.withUnsafeMutableBufferPointer { dh in dw.withUnsafeMutableBufferPointer { dw in
            h.withUnsafeBufferPointer { hp in w.withUnsafeBufferPointer { wp in targets.withUnsafeBufferPointer { t in
                Classifier.forwardBackward(hidden: hp, weight: wp, targets: t, vocabulary: v, channels: c, scale: scale, dhidden: dh, dweight: dw)
            } } }
        } }
        #expect(result.count == 5)
        // The loss against a direct Double computation.
        var expected = 0.0
        for t in 0..<n where targets[t] != -100 {
            var logits = [Double](repeating: 0, count: v)
            for j in 0..<v { for k in 0..<c { logits[j] += Double(h[t * c + k]) * Double(w[j * c + k]) } }
            let m = logits.max()!
            let lse = m + Glibc.log(logits.reduce(0) { $0 + Glibc.exp($1 - m) })
            expected += lse - logits[Int(targets[t])]
        }
        #expect(abs(result.lossSum - expected) < 1e-4 * abs(expected), "loss \(result.lossSum), direct \(expected)")
        for t in [1, 4] { for k in 0..<c { #expect(dh[t * c + k] == 0, "unsupervised row \(t) got a gradient") } }
        let (h0, w0) = (h, w)
        expectGradient("classifier hidden", at: &h, analytic: dh) { loss($0, w0) }
        expectGradient("classifier weight", at: &w, analytic: dw) { loss(h0, $0) }
    }
}
