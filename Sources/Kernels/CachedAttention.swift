import Glibc

/// Causal grouped-query attention of new tokens against a key/value cache (generation).
///
/// The cache holds keys and values of positions `0 ..< past + n`: the `past` tokens seen before and
/// the `n` new ones (their rows already written). New token `i` (position `past + i`) attends to cache
/// positions `0 ... past + i` (with a sliding window `W` in `shape`, only `past + i − W < j ≤ past + i`).
///
/// Shapes: `q (n, Hq, d)`, `keys, values (capacity, Hkv, d)` (rows past `past + n` are ignored),
/// `out (n, Hq, d)`; query head `h` reads key/value head `h / (Hq / Hkv)`.
/// Math, with `s = 1/√d`: `out_i = Σ_{j ≤ past+i} softmax_j(s · q_i · k_j) v_j` — the same
/// function as ``Attention/forward(out:lse:q:k:v:boundaries:shape:)`` restricted to the last `n` rows
/// of one segment, computed the same way (scores by `sgemm`, max-subtracted `expf`, one division).
///
/// Forward only: generation never trains, so there is no backward; the training path keeps its
/// activations in ``Attention`` and never reads the cache.
public enum CachedAttention {
    /// Query rows per block (bounds the scratch to `blockRows × (past + n)` scores).
    public static let blockRows = 64

    public static func forward(
        out: UnsafeMutableBufferPointer<Float>,
        q: UnsafeBufferPointer<Float>,
        keys: UnsafeBufferPointer<Float>, values: UnsafeBufferPointer<Float>,
        past: Int, newTokens n: Int, shape: Attention.Shape
    ) {
        let hq = shape.queryHeads, d = shape.headDimension, qw = shape.queryWidth, kw = shape.keyValueWidth
        let total = past + n
        precondition(past >= 0 && n >= 0, "CachedAttention.forward: negative length (past \(past), new \(n))")
        precondition(q.count >= n * qw && out.count >= n * qw && keys.count >= total * kw && values.count >= total * kw,
                     "CachedAttention.forward: buffers do not fit (past \(past), new \(n))")
        guard n > 0 else { return }
        let group = hq / shape.keyValueHeads, scale = shape.scale
        let scores = UnsafeMutableBufferPointer<Float>.allocate(capacity: min(blockRows, n) * total)
        defer { scores.deallocate() }
        let s = scores.baseAddress!, qb = q.baseAddress!, kb = keys.baseAddress!, vb = values.baseAddress!
        let ob = out.baseAddress!
        for h in 0..<hq {
            let g = h / group
            var r0 = 0
            while r0 < n {
                let r1 = min(r0 + blockRows, n), rows = r1 - r0
                // Cache rows lo ..< past + r1 are the keys some row of the block sees.
                let lo = shape.firstKey(past + r0), width = past + r1 - lo
                BLAS.gemm(transposeA: false, transposeB: true, m: rows, n: width, k: d, alpha: scale,
                          a: qb + r0 * qw + h * d, lda: qw, b: kb + lo * kw + g * d, ldb: kw, c: s, ldc: width)
                for i in 0..<rows {
                    let position = past + r0 + i, row = s + i * width
                    let first = shape.firstKey(position) - lo, last = position - lo
                    for j in 0..<first { row[j] = 0 }
                    var maximum = -Float.infinity
                    for j in first...last where row[j] > maximum { maximum = row[j] }
                    var sum: Float = 0
                    for j in first...last {
                        let e = expf(row[j] - maximum)
                        row[j] = e
                        sum += e
                    }
                    let inverse = 1 / sum
                    for j in first...last { row[j] *= inverse }
                    for j in (last + 1)..<width { row[j] = 0 }
                }
                BLAS.gemm(transposeA: false, transposeB: false, m: rows, n: d, k: width,
                          a: s, lda: width, b: vb + lo * kw + g * d, ldb: kw, c: ob + r0 * qw + h * d, ldc: qw)
                r0 = r1
            }
        }
    }
}
