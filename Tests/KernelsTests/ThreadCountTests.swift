import Testing
import TestSupport
@testable import Kernels

/// The multithreaded kernels give the same bits whatever the thread count: each splits its work into
/// pieces whose arithmetic is fixed (attention's (segment, key/value head) tasks, AdamW's elements), so
/// 1, 2 and 3 threads
/// must agree exactly. N-rank versus 1-rank runs rely on this when ranks use different thread counts.
@Suite(.serialized) struct ThreadCountTests {
    /// Runs `body` at 1, 2 and 3 threads and expects every result equal to the 1-thread one, bitwise.
    func expectSameAtEveryThreadCount(_ what: String, _ body: () -> [[Float]]) {
        let saved = BLAS.threadCount
        defer { BLAS.threadCount = saved }
        BLAS.threadCount = 1
        let single = body()
        for threads in [2, 3] {
            BLAS.threadCount = threads
            let multi = body()
            for (index, (a, b)) in zip(single, multi).enumerated() {
                let differing = zip(a, b).filter { $0.bitPattern != $1.bitPattern }.count
                #expect(differing == 0, "\(what), output \(index): \(differing) of \(a.count) elements differ at \(threads) threads from 1 thread")
            }
        }
    }

    /// Segments of 130 (three 64-row blocks), 1, 69 and 64 tokens; 6 query heads over 2 key/value heads
    /// (groups of 3 stacked); with and without a sliding window.
    @Test(arguments: [nil, 20] as [Int?]) func attention(window: Int?) {
        let boundaries = [0, 130, 131, 200, 264], n = 264
        let shape = Attention.Shape(queryHeads: 6, keyValueHeads: 2, headDimension: 16, window: window)
        let qw = 6 * 16, kw = 2 * 16
        var random = TestRandom(seed: 31)
        let q = random.normals(n * qw), k = random.normals(n * kw), v = random.normals(n * kw), r = random.normals(n * qw)
        expectSameAtEveryThreadCount("attention, window \(window ?? 0)") {
            var out = [Float](repeating: 0, count: n * qw), lse = [Float](repeating: 0, count: n * 6)
            var dq = [Float](repeating: 0.5, count: n * qw), dk = [Float](repeating: 0.5, count: n * kw), dv = dk
            q.withUnsafeBufferPointer { q in k.withUnsafeBufferPointer { k in v.withUnsafeBufferPointer { v in
                out.withUnsafeMutableBufferPointer { o in lse.withUnsafeMutableBufferPointer { l in
                    Attention.forward(out: o, lse: l, q: q, k: k, v: v, boundaries: boundaries, shape: shape)
                } }
                dq.withUnsafeMutableBufferPointer { dq in dk.withUnsafeMutableBufferPointer { dk in dv.withUnsafeMutableBufferPointer { dv in
                    r.withUnsafeBufferPointer { r in out.withUnsafeBufferPointer { o in lse.withUnsafeBufferPointer { l in
                        Attention.backward(dq: dq, dk: dk, dv: dv, dout: r, q: q, k: k, v: v, out: o, lse: l,
                                           boundaries: boundaries, shape: shape)
                    } } }
                } } }
            } } }
            return [out, lse, dq, dk, dv]
        }
    }

    /// 100 003 elements: three threads' runs of at least 32 Ki, and an odd tail.
    @Test func adamW() {
        let count = 100_003
        var random = TestRandom(seed: 33)
        let p0 = random.normals(count), g = random.normals(count)
        let optimizer = AdamW(beta1: 0.9, beta2: 0.95, epsilon: 1e-8, weightDecay: 0.1)
        expectSameAtEveryThreadCount("AdamW") {
            var p = p0, m = [Float](repeating: 0, count: count), v = m
            for step in 1...2 {
                p.withUnsafeMutableBufferPointer { p in m.withUnsafeMutableBufferPointer { m in v.withUnsafeMutableBufferPointer { v in
                    g.withUnsafeBufferPointer { g in
                        optimizer.update(parameters: p, gradients: g, m: m, v: v, step: step, learningRate: 1e-2,
                                         gradientScale: 0.5, decay: true)
                    }
                } } }
            }
            return [p, m, v]
        }
    }

    /// 700 positions, 600 supervised: a full chunk of 512 rows and one of 88 (softmax rows handed out
    /// 32 at a time, the last group partial), V 37, C 8; each thread count run without a workspace and
    /// with one that a larger call grew first (the model's, reused every micro-batch). The loss sum is
    /// compared bitwise too (the rows' losses are added in row order).
    @Test func classifier() {
        let n = 700, c = 8, v = 37
        var random = TestRandom(seed: 35)
        let h = random.normals(n * c), w = random.normals(v * c)
        let targets = (0..<n).map { $0 % 7 == 3 ? Int32(-100) : Int32(($0 * 13) % v) }
        let workspace = Classifier.Workspace()
        var lossSums: [UInt64] = []
        expectSameAtEveryThreadCount("classifier") {
            var outputs: [[Float]] = []
            for reused in [nil, workspace] {
                if let reused {  // grown by a larger vocabulary first: only its prefix is used afterwards
                    let wide = [Float](repeating: 0.25, count: 2 * v * c)
                    h.withUnsafeBufferPointer { hp in wide.withUnsafeBufferPointer { wp in targets.withUnsafeBufferPointer { t in
                        _ = Classifier.forwardBackward(hidden: hp, weight: wp, targets: t, vocabulary: 2 * v, channels: c, scale: 1,
                                                       dhidden: nil, dweight: nil, workspace: reused)
                    } } }
                }
                var dh = [Float](repeating: 0, count: n * c), dw = [Float](repeating: 0.5, count: v * c)
                let result = dh.withUnsafeMutableBufferPointer { dh in dw.withUnsafeMutableBufferPointer { dw in
                    h.withUnsafeBufferPointer { hp in w.withUnsafeBufferPointer { wp in targets.withUnsafeBufferPointer { t in
                        Classifier.forwardBackward(hidden: hp, weight: wp, targets: t, vocabulary: v, channels: c, scale: 1 / 600,
                                                   dhidden: dh, dweight: dw, workspace: reused)
                    } } }
                } }
                #expect(result.count == 600)
                lossSums.append(result.lossSum.bitPattern)
                outputs += [dh, dw]
            }
            #expect(outputs[0] == outputs[2] && outputs[1] == outputs[3], "the classifier's gradients differ with a reused workspace")
            return outputs
        }
        #expect(Set(lossSums).count == 1, "loss sums differ between thread counts or workspaces: \(lossSums.map { Double(bitPattern: $0) })")
    }

    /// `BLAS.gemmSplittingRows` (forced to split under OpenBLAS, the tests' library): 37 × 29 × 45 NT with
    /// row strides wider than the matrices and `beta = 1`, at 2 and 3 threads, against the plain gemm
    /// (1e-5 of max |C|: each row's sum is one call's, the library may order it differently by block size).
    @Test func gemmSplittingRows() {
        let m = 37, n = 29, k = 45, lda = 50, ldb = 47, ldc = 31
        var random = TestRandom(seed: 37)
        let a = random.normals(m * lda), b = random.normals(n * ldb), c0 = random.normals(m * ldc)
        let saved = BLAS.threadCount
        defer { BLAS.threadCount = saved }
        func run(split: Bool) -> [Float] {
            var c = c0
            a.withUnsafeBufferPointer { a in b.withUnsafeBufferPointer { b in c.withUnsafeMutableBufferPointer { c in
                if split {
                    BLAS.gemmSplittingRows(transposeB: true, m: m, n: n, k: k, alpha: 0.5, a: a.baseAddress!, lda: lda,
                                           b: b.baseAddress!, ldb: ldb, beta: 1, c: c.baseAddress!, ldc: ldc, onAnyLibrary: true)
                } else {
                    BLAS.gemm(transposeA: false, transposeB: true, m: m, n: n, k: k, alpha: 0.5, a: a.baseAddress!, lda: lda,
                              b: b.baseAddress!, ldb: ldb, beta: 1, c: c.baseAddress!, ldc: ldc)
                }
            } } }
            return c
        }
        BLAS.threadCount = 1
        let expected = run(split: false)
        let scale = expected.map(abs).max()!
        for threads in [2, 3] {
            BLAS.threadCount = threads
            let found = run(split: true)
            let worst = zip(found, expected).map { abs($0 - $1) }.max()!
            #expect(worst <= 1e-5 * scale, "\(threads) threads: split rows differ by \(worst) (max |C| \(scale))")
            for row in 0..<m { for column in n..<ldc {
                #expect(found[row * ldc + column] == c0[row * ldc + column], "\(threads) threads: padding of row \(row) written")
            } }
            #expect(BLAS.threadCount == threads, "the thread count was not restored")
        }
    }

    /// RoPE over 600 tokens of 6 heads of 16 (positions of two segments; at least 170 tokens a thread:
    /// three threads' worth), forward and inverse.
    @Test func rope() {
        let n = 600, heads = 6, d = 16
        let table = RotaryTable(headDimension: d, maxPositions: 400, base: 10_000)
        let positions = (0..<n).map { Int32($0 < 400 ? $0 : $0 - 400) }
        var random = TestRandom(seed: 39)
        let x0 = random.normals(n * heads * d)
        expectSameAtEveryThreadCount("RoPE") {
            var forward = x0, inverse = x0
            positions.withUnsafeBufferPointer { p in
                forward.withUnsafeMutableBufferPointer { RoPE.apply($0, positions: p, heads: heads, table: table) }
                inverse.withUnsafeMutableBufferPointer { RoPE.apply($0, positions: p, heads: heads, table: table, inverse: true) }
            }
            return [forward, inverse]
        }
    }
}
