import Glibc

/// Causal grouped-query self-attention over packed segments.
///
/// Tokens of several examples are packed one after another; `boundaries` lists where each segment
/// starts (`boundaries[0] == 0`, last element `N`). A token attends only to earlier tokens of its own
/// segment, so packed examples never see each other, and no work is spent on other segments' blocks:
/// each segment is processed alone, in blocks of ``blockRows`` query rows that touch only the keys at
/// or before the block's last row.
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
        public init(queryHeads: Int, keyValueHeads: Int, headDimension: Int) {
            precondition(queryHeads % keyValueHeads == 0, "Attention: \(queryHeads) query heads are not a multiple of \(keyValueHeads) key/value heads")
            self.queryHeads = queryHeads
            self.keyValueHeads = keyValueHeads
            self.headDimension = headDimension
        }
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
                    let r1 = min(r0 + blockRows, length), rows = r1 - r0
                    BLAS.gemm(transposeA: false, transposeB: true, m: rows, n: r1, k: d, alpha: scale,
                              a: qb + (start + r0) * qw + h * d, lda: qw, b: kSeg, ldb: kw, c: s, ldc: r1)
                    for i in 0..<rows {
                        let p = r0 + i, row = s + i * r1
                        let maximum = VectorMath.maximum(row, count: p + 1)
                        let sum = VectorMath.exponentiate(row, count: p + 1, shift: maximum)
                        VectorMath.scale(row, count: p + 1, by: 1 / sum)
                        for j in (p + 1)..<r1 { row[j] = 0 }
                        lb[(start + p) * hq + h] = maximum + logf(sum)
                    }
                    BLAS.gemm(transposeA: false, transposeB: false, m: rows, n: d, k: r1,
                              a: s, lda: r1, b: vSeg, ldb: kw, c: ob + (start + r0) * qw + h * d, ldc: qw)
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
                    let qRows = qb + (start + r0) * qw + h * d
                    let doRows = dob + (start + r0) * qw + h * d
                    let oRows = ob + (start + r0) * qw + h * d
                    // P = exp(S − lse), causal.
                    BLAS.gemm(transposeA: false, transposeB: true, m: rows, n: r1, k: d, alpha: scale,
                              a: qRows, lda: qw, b: kSeg, ldb: kw, c: p, ldc: r1)
                    // dP = dO Vᵀ.
                    BLAS.gemm(transposeA: false, transposeB: true, m: rows, n: r1, k: d,
                              a: doRows, lda: qw, b: vSeg, ldb: kw, c: dp, ldc: r1)
                    for i in 0..<rows {
                        let pos = r0 + i, prow = p + i * r1, dprow = dp + i * r1
                        let m = lb[(start + pos) * hq + h]
                        var rowDot: Float = 0
                        let o = oRows + i * qw, g = doRows + i * qw
                        for c in 0..<d { rowDot += o[c] * g[c] }
                        _ = VectorMath.exponentiate(prow, count: pos + 1, shift: m)
                        for j in 0...pos { dprow[j] = prow[j] * (dprow[j] - rowDot) }
                        for j in (pos + 1)..<r1 {
                            prow[j] = 0
                            dprow[j] = 0
                        }
                    }
                    // dV += Pᵀ dO.
                    BLAS.gemm(transposeA: true, transposeB: false, m: r1, n: d, k: rows,
                              a: p, lda: r1, b: doRows, ldb: qw, beta: 1, c: dvSeg, ldc: kw)
                    // dQ += s · dS K.
                    BLAS.gemm(transposeA: false, transposeB: false, m: rows, n: d, k: r1, alpha: scale,
                              a: dp, lda: r1, b: kSeg, ldb: kw, beta: 1, c: dqb + (start + r0) * qw + h * d, ldc: qw)
                    // dK += s · dSᵀ Q.
                    BLAS.gemm(transposeA: true, transposeB: false, m: r1, n: d, k: rows, alpha: scale,
                              a: dp, lda: r1, b: qRows, ldb: qw, beta: 1, c: dkSeg, ldc: kw)
                    r0 = r1
                }
            }
        }
    }
}
