import Testing
import TestSupport
import Glibc
@testable import Kernels

@Suite struct AttentionTests {
    /// Segments of 70 (more than one block of 64 rows), 1 and 5 tokens; GQA with 4 query heads over 2.
    let boundaries = [0, 70, 71, 76]
    var shape = Attention.Shape(queryHeads: 4, keyValueHeads: 2, headDimension: 8)
    var n: Int { boundaries.last! }
    var qw: Int { shape.queryHeads * shape.headDimension }
    var kw: Int { shape.keyValueHeads * shape.headDimension }

    func forward(_ q: [Float], _ k: [Float], _ v: [Float]) -> (out: [Float], lse: [Float]) {
        var out = [Float](repeating: 0, count: n * qw), lse = [Float](repeating: 0, count: n * shape.queryHeads)
        out.withUnsafeMutableBufferPointer { o in lse.withUnsafeMutableBufferPointer { l in
            q.withUnsafeBufferPointer { q in k.withUnsafeBufferPointer { k in v.withUnsafeBufferPointer { v in
                Attention.forward(out: o, lse: l, q: q, k: k, v: v, boundaries: boundaries, shape: shape)
            } } }
        } }
        return (out, lse)
    }

    /// Direct causal attention in Double, one segment at a time (keys `i − W < j ≤ i` with a window `W`).
    func reference(_ q: [Float], _ k: [Float], _ v: [Float]) -> [Double] {
        let d = shape.headDimension, group = shape.queryHeads / shape.keyValueHeads
        var out = [Double](repeating: 0, count: n * qw)
        for (start, end) in zip(boundaries, boundaries.dropFirst()) {
            for h in 0..<shape.queryHeads {
                let g = h / group
                for i in start..<end {
                    let first = max(start, i - (shape.window ?? n) + 1)
                    var scores: [Double] = []
                    for j in first...i {
                        var s = 0.0
                        for c in 0..<d { s += Double(q[i * qw + h * d + c]) * Double(k[j * kw + g * d + c]) }
                        scores.append(s / Double(d).squareRoot())
                    }
                    let m = scores.max()!
                    let e = scores.map { Glibc.exp($0 - m) }, z = e.reduce(0, +)
                    for (offset, j) in (first...i).enumerated() {
                        for c in 0..<d { out[i * qw + h * d + c] += e[offset] / z * Double(v[j * kw + g * d + c]) }
                    }
                }
            }
        }
        return out
    }

    @Test func forwardMatchesDirectComputationAndNeverCrossesSegments() { checkForward() }

    func checkForward() {
        var random = TestRandom(seed: 11)
        let q = random.normals(n * qw), k = random.normals(n * kw), v = random.normals(n * kw)
        let (out, _) = forward(q, k, v)
        let expected = reference(q, k, v)
        let worst = zip(out, expected).map { abs(Double($0) - $1) }.max()!
        #expect(worst < 1e-5, "attention differs from the direct computation by \(worst)")
        // Changing the first segment's keys must not change any later segment's output.
        var k2 = k
        for i in 0..<(70 * kw) { k2[i] += 1 }
        let (out2, _) = forward(q, k2, v)
        for i in (70 * qw)..<(n * qw) { #expect(out[i] == out2[i], "segment 2/3 output moved at \(i) when segment 1 changed") }
    }

    @Test func backwardMatchesFiniteDifferences() { checkBackward() }

    func checkBackward() {
        var random = TestRandom(seed: 12)
        var q = random.normals(n * qw), k = random.normals(n * kw), v = random.normals(n * kw)
        let r = random.normals(n * qw)
        let (out, lse) = forward(q, k, v)
        var dq = [Float](repeating: 0, count: n * qw), dk = [Float](repeating: 0, count: n * kw), dv = dk
        dq.withUnsafeMutableBufferPointer { dq in dk.withUnsafeMutableBufferPointer { dk in dv.withUnsafeMutableBufferPointer { dv in
            r.withUnsafeBufferPointer { r in q.withUnsafeBufferPointer { qp in k.withUnsafeBufferPointer { kp in v.withUnsafeBufferPointer { vp in
                out.withUnsafeBufferPointer { o in lse.withUnsafeBufferPointer { l in
                    Attention.backward(dq: dq, dk: dk, dv: dv, dout: r, q: qp, k: kp, v: vp, out: o, lse: l, boundaries: boundaries, shape: shape)
                } }
            } } } }
        } } }
        let (q0, k0, v0) = (q, k, v)
        expectGradient("attention q", at: &q, analytic: dq) { weightedSum(forward($0, k0, v0).out, r) }
        expectGradient("attention k", at: &k, analytic: dk) { weightedSum(forward(q0, $0, v0).out, r) }
        expectGradient("attention v", at: &v, analytic: dv) { weightedSum(forward(q0, k0, $0).out, r) }
    }
}

/// Sliding-window attention (Mistral's `sliding_window`): the same checks with a window of 20 keys, so
/// rows of the second 64-row block of the 70-token segment see keys of the first block, and the short
/// segments are shorter than the window; windows of 3 and 1 (each token sees only itself).
@Suite struct WindowedAttentionTests {
    static func tests(window: Int) -> AttentionTests {
        var tests = AttentionTests()
        tests.shape = Attention.Shape(queryHeads: 4, keyValueHeads: 2, headDimension: 8, window: window)
        return tests
    }

    @Test(arguments: [20, 1]) func forwardMatchesDirectComputation(window: Int) { Self.tests(window: window).checkForward() }
    /// (Not window 1: its output is `v`, so dq and dk are exactly 0 and a finite difference is only noise.)
    @Test(arguments: [20, 3]) func backwardMatchesFiniteDifferences(window: Int) { Self.tests(window: window).checkBackward() }

    /// Keys further back than the window do not move the output.
    @Test func keysOutsideTheWindowAreIgnored() {
        let tests = Self.tests(window: 20)
        var random = TestRandom(seed: 13)
        let q = random.normals(tests.n * tests.qw), k = random.normals(tests.n * tests.kw), v = random.normals(tests.n * tests.kw)
        var k2 = k, v2 = v
        for i in 0..<(10 * tests.kw) { k2[i] += 1; v2[i] -= 1 }
        let (out, _) = tests.forward(q, k, v), (out2, _) = tests.forward(q, k2, v2)
        // Rows 29… of the first segment see keys 10… only.
        for i in (29 * tests.qw)..<(tests.n * tests.qw) { #expect(out[i] == out2[i], "output moved at \(i) when keys 0..<10 changed") }
        #expect(out[0] != out2[0])
    }
}

/// Cached attention with a window equals the windowed training attention's last rows.
@Suite struct WindowedCachedAttentionTests {
    @Test(arguments: [nil, 3, 20] as [Int?]) func cachedRowsEqualFullForward(window: Int?) {
        let shape = Attention.Shape(queryHeads: 4, keyValueHeads: 2, headDimension: 8, window: window)
        let n = 70, past = 61, new = n - past, qw = 32, kw = 16
        var random = TestRandom(seed: 14)
        let q = random.normals(n * qw), k = random.normals(n * kw), v = random.normals(n * kw)
        var full = [Float](repeating: 0, count: n * qw), lse = [Float](repeating: 0, count: n * 4)
        full.withUnsafeMutableBufferPointer { o in lse.withUnsafeMutableBufferPointer { l in
            q.withUnsafeBufferPointer { q in k.withUnsafeBufferPointer { k in v.withUnsafeBufferPointer { v in
                Attention.forward(out: o, lse: l, q: q, k: k, v: v, boundaries: [0, n], shape: shape)
            } } }
        } }
        var cached = [Float](repeating: 0, count: new * qw)
        let tail = Array(q[(past * qw)...])
        cached.withUnsafeMutableBufferPointer { o in tail.withUnsafeBufferPointer { q in
            k.withUnsafeBufferPointer { k in v.withUnsafeBufferPointer { v in
                CachedAttention.forward(out: o, q: q, keys: k, values: v, past: past, newTokens: new, shape: shape)
            } }
        } }
        let worst = zip(cached, full[(past * qw)...]).map { abs($0 - $1) }.max()!
        #expect(worst <= 1e-5, "window \(window ?? 0): cached rows differ from the full forward by \(worst)")
    }
}

@Suite struct AdamWTests {
    /// Two steps against torch.optim.AdamW's update written out in Double.
    @Test func matchesTorchFormula() {
        let optimizer = AdamW(beta1: 0.9, beta2: 0.95, epsilon: 1e-8, weightDecay: 0.1)
        var random = TestRandom(seed: 21)
        var p = random.normals(10), m = [Float](repeating: 0, count: 10), v = m
        var pd = p.map(Double.init), md = [Double](repeating: 0, count: 10), vd = md
        let lr: Float = 1e-2, scale: Float = 0.5
        for t in 1...2 {
            let g = random.normals(10)
            p.withUnsafeMutableBufferPointer { p in m.withUnsafeMutableBufferPointer { m in v.withUnsafeMutableBufferPointer { v in
                g.withUnsafeBufferPointer { g in
                    optimizer.update(parameters: p, gradients: g, m: m, v: v, step: t, learningRate: lr, gradientScale: scale, decay: true)
                }
            } } }
            for i in 0..<10 {
                let gi = Double(g[i]) * Double(scale)
                pd[i] *= 1 - Double(lr) * 0.1
                md[i] = 0.9 * md[i] + 0.1 * gi
                vd[i] = 0.95 * vd[i] + 0.05 * gi * gi
                let c1 = 1 - Glibc.pow(0.9, Double(t)), c2 = 1 - Glibc.pow(0.95, Double(t))
                pd[i] -= Double(lr) / c1 * md[i] / (vd[i].squareRoot() / c2.squareRoot() + 1e-8)
            }
        }
        for i in 0..<10 { #expect(abs(Double(p[i]) - pd[i]) < 1e-6, "parameter \(i): \(p[i]) vs \(pd[i])") }
    }
}
