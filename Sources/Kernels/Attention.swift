import Glibc

/// Causal grouped-query self-attention over packed segments.
///
/// Tokens of several examples are packed one after another; `boundaries` lists where each segment
/// starts (`boundaries[0] == 0`, last element `N`). A token attends only to earlier tokens of its own
/// segment, so packed examples never see each other, and no work is spent on other segments' blocks:
/// each segment is processed alone, in blocks of ``blockRows`` query rows that touch only the keys at
/// or before the block's last row.
///
/// With a sliding window `W` (Mistral's `sliding_window`, transformers' `sliding_window_overlay`), the
/// token at index `p` of its segment sees only keys `j` with `p − W < j ≤ p` (itself and the `W − 1`
/// before it), and each block's products touch only the keys some row of the block sees.
///
/// Shapes: `q (N, Hq, d)`, `k, v (N, Hkv, d)`, `out (N, Hq, d)`, `lse (N, Hq)`; query head `h` reads
/// key/value head `h / (Hq / Hkv)`. Forward caches `lse` (the log-sum-exp of each softmax row), so the
/// backward recomputes the probabilities instead of storing `(T, T)` per head.
///
/// Math, with `s = 1/√d`, `S = s·QKᵀ` (causal), `P = softmax(S)`, `O = PV`:
/// `dV = Pᵀ dO`, `dP = dO Vᵀ`, `dS = P ⊙ (dP − rowsum(dO ⊙ O))`, `dQ = s·dS K`, `dK = s·dSᵀ Q`.
public enum Attention {
    /// Query rows per block.
    public static let blockRows = 64

    public struct Shape: Sendable {
        public var queryHeads: Int
        public var keyValueHeads: Int
        public var headDimension: Int
        /// Keys each query sees, itself included (nil: every earlier key of its segment).
        public var window: Int?
        public init(queryHeads: Int, keyValueHeads: Int, headDimension: Int, window: Int? = nil) {
            precondition(queryHeads % keyValueHeads == 0, "Attention: \(queryHeads) query heads are not a multiple of \(keyValueHeads) key/value heads")
            precondition(window.map { $0 >= 1 } ?? true, "Attention: window \(window ?? 0) must be at least 1")
            self.queryHeads = queryHeads
            self.keyValueHeads = keyValueHeads
            self.headDimension = headDimension
            self.window = window
        }
        /// The first key index (within the segment) that the query at index `p` sees.
        @inline(__always) func firstKey(_ p: Int) -> Int { window.map { max(0, p - $0 + 1) } ?? 0 }
        var queryWidth: Int { queryHeads * headDimension }
        var keyValueWidth: Int { keyValueHeads * headDimension }
        var scale: Float { 1 / Float(headDimension).squareRoot() }
    }

    public static func forward(
        out: UnsafeMutableBufferPointer<Float>,
        lse: UnsafeMutableBufferPointer<Float>,
        q: UnsafeBufferPointer<Float>, k: UnsafeBufferPointer<Float>, v: UnsafeBufferPointer<Float>,
        boundaries: [Int], shape: Shape
    ) {
        let n = boundaries.last ?? 0
        let hq = shape.queryHeads, d = shape.headDimension, qw = shape.queryWidth, kw = shape.keyValueWidth
        precondition(q.count >= n * qw && out.count >= n * qw && k.count >= n * kw && v.count >= n * kw && lse.count >= n * hq,
                     "Attention.forward: buffers do not fit (N \(n))")
        guard n > 0 else { return }
        let group = hq / shape.keyValueHeads, scale = shape.scale
        let longest = zip(boundaries.dropFirst(), boundaries).map { $0 - $1 }.max() ?? 0
        let scores = UnsafeMutableBufferPointer<Float>.allocate(capacity: blockRows * longest)
        defer { scores.deallocate() }
        let s = scores.baseAddress!, qb = q.baseAddress!, kb = k.baseAddress!, vb = v.baseAddress!
        let ob = out.baseAddress!, lb = lse.baseAddress!
        for (start, end) in zip(boundaries, boundaries.dropFirst()) where end > start {
            let length = end - start
            for h in 0..<hq {
                let g = h / group
                let kSeg = kb + start * kw + g * d, vSeg = vb + start * kw + g * d
                var r0 = 0
                while r0 < length {
                    // Keys lo ..< r1 are the ones some row of the block sees; row p sees firstKey(p) ... p.
                    let r1 = min(r0 + blockRows, length), rows = r1 - r0
                    let lo = shape.firstKey(r0), width = r1 - lo
                    BLAS.gemm(transposeA: false, transposeB: true, m: rows, n: width, k: d, alpha: scale,
                              a: qb + (start + r0) * qw + h * d, lda: qw, b: kSeg + lo * kw, ldb: kw, c: s, ldc: width)
                    for i in 0..<rows {
                        let p = r0 + i, row = s + i * width
                        let first = shape.firstKey(p) - lo, count = p - lo + 1 - first
                        for j in 0..<first { row[j] = 0 }
                        let maximum = VectorMath.maximum(row + first, count: count)
                        let sum = VectorMath.exponentiate(row + first, count: count, shift: maximum)
                        VectorMath.scale(row + first, count: count, by: 1 / sum)
                        for j in (p - lo + 1)..<width { row[j] = 0 }
                        lb[(start + p) * hq + h] = maximum + logf(sum)
                    }
                    BLAS.gemm(transposeA: false, transposeB: false, m: rows, n: d, k: width,
                              a: s, lda: width, b: vSeg + lo * kw, ldb: kw, c: ob + (start + r0) * qw + h * d, ldc: qw)
                    r0 = r1
                }
            }
        }
    }

    /// Accumulates `dq += ∂L/∂q`, `dk += ∂L/∂k`, `dv += ∂L/∂v` from `dout`, recomputing the
    /// probabilities from `q`, `k` and the cached `lse`.
    public static func backward(
        dq: UnsafeMutableBufferPointer<Float>, dk: UnsafeMutableBufferPointer<Float>, dv: UnsafeMutableBufferPointer<Float>,
        dout: UnsafeBufferPointer<Float>,
        q: UnsafeBufferPointer<Float>, k: UnsafeBufferPointer<Float>, v: UnsafeBufferPointer<Float>,
        out: UnsafeBufferPointer<Float>, lse: UnsafeBufferPointer<Float>,
        boundaries: [Int], shape: Shape
    ) {
        let n = boundaries.last ?? 0
        let hq = shape.queryHeads, d = shape.headDimension, qw = shape.queryWidth, kw = shape.keyValueWidth
        precondition(q.count >= n * qw && out.count >= n * qw && dout.count >= n * qw && dq.count >= n * qw
                     && k.count >= n * kw && v.count >= n * kw && dk.count >= n * kw && dv.count >= n * kw && lse.count >= n * hq,
                     "Attention.backward: buffers do not fit (N \(n))")
        guard n > 0 else { return }
        let group = hq / shape.keyValueHeads, scale = shape.scale
        let longest = zip(boundaries.dropFirst(), boundaries).map { $0 - $1 }.max() ?? 0
        let scratch = UnsafeMutableBufferPointer<Float>.allocate(capacity: 2 * blockRows * longest)
        defer { scratch.deallocate() }
        let p = scratch.baseAddress!, dp = p + blockRows * longest
        let qb = q.baseAddress!, kb = k.baseAddress!, vb = v.baseAddress!, ob = out.baseAddress!, lb = lse.baseAddress!
        let dqb = dq.baseAddress!, dkb = dk.baseAddress!, dvb = dv.baseAddress!, dob = dout.baseAddress!
        for (start, end) in zip(boundaries, boundaries.dropFirst()) where end > start {
            let length = end - start
            for h in 0..<hq {
                let g = h / group
                let kSeg = kb + start * kw + g * d, vSeg = vb + start * kw + g * d
                let dkSeg = dkb + start * kw + g * d, dvSeg = dvb + start * kw + g * d
                var r0 = 0
                while r0 < length {
                    let r1 = min(r0 + blockRows, length), rows = r1 - r0
                    let lo = shape.firstKey(r0), width = r1 - lo
                    let qRows = qb + (start + r0) * qw + h * d
                    let doRows = dob + (start + r0) * qw + h * d
                    let oRows = ob + (start + r0) * qw + h * d
                    // P = exp(S − lse), causal (and windowed), over keys lo ..< r1.
                    BLAS.gemm(transposeA: false, transposeB: true, m: rows, n: width, k: d, alpha: scale,
                              a: qRows, lda: qw, b: kSeg + lo * kw, ldb: kw, c: p, ldc: width)
                    // dP = dO Vᵀ.
                    BLAS.gemm(transposeA: false, transposeB: true, m: rows, n: width, k: d,
                              a: doRows, lda: qw, b: vSeg + lo * kw, ldb: kw, c: dp, ldc: width)
                    for i in 0..<rows {
                        let pos = r0 + i, prow = p + i * width, dprow = dp + i * width
                        let first = shape.firstKey(pos) - lo, last = pos - lo
                        let m = lb[(start + pos) * hq + h]
                        var rowDot: Float = 0
                        let o = oRows + i * qw, g = doRows + i * qw
                        for c in 0..<d { rowDot += o[c] * g[c] }
                        for j in 0..<first {
                            prow[j] = 0
                            dprow[j] = 0
                        }
                        _ = VectorMath.exponentiate(prow + first, count: last - first + 1, shift: m)
                        for j in first...last { dprow[j] = prow[j] * (dprow[j] - rowDot) }
                        for j in (last + 1)..<width {
                            prow[j] = 0
                            dprow[j] = 0
                        }
                    }
                    // dV += Pᵀ dO.
                    BLAS.gemm(transposeA: true, transposeB: false, m: width, n: d, k: rows,
                              a: p, lda: width, b: doRows, ldb: qw, beta: 1, c: dvSeg + lo * kw, ldc: kw)
                    // dQ += s · dS K.
                    BLAS.gemm(transposeA: false, transposeB: false, m: rows, n: d, k: width, alpha: scale,
                              a: dp, lda: width, b: kSeg + lo * kw, ldb: kw, beta: 1, c: dqb + (start + r0) * qw + h * d, ldc: qw)
                    // dK += s · dSᵀ Q.
                    BLAS.gemm(transposeA: true, transposeB: false, m: width, n: d, k: rows, alpha: scale,
                              a: dp, lda: width, b: qRows, ldb: qw, beta: 1, c: dkSeg + lo * kw, ldc: kw)
                    r0 = r1
                }
            }
        }
    }
}
