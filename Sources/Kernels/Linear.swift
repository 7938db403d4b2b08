/// A dense layer in HF layout: `out = inp · Wᵀ + b`, with `W` stored `(O, I)` row-major.
///
/// Shapes: `inp (N, I)`, `weight (O, I)`, `bias (O)` or none, `out (N, O)`.
/// Backward caches nothing beyond the layer input, which the caller keeps.
public enum Linear {
    /// `out = inp · Wᵀ (+ b)`.
    public static func forward(
        out: UnsafeMutableBufferPointer<Float>,
        inp: UnsafeBufferPointer<Float>,
        weight: UnsafeBufferPointer<Float>,
        bias: UnsafeBufferPointer<Float>?,
        tokens n: Int, inputs i: Int, outputs o: Int
    ) {
        precondition(inp.count >= n * i && out.count >= n * o && weight.count == o * i,
                     "Linear.forward: buffers do not fit (N \(n), I \(i), O \(o))")
        guard n > 0 else { return }
        let outBase = out.baseAddress!
        var beta: Float = 0
        if let bias {
            precondition(bias.count == o, "Linear.forward: bias has \(bias.count) elements, expected \(o)")
            let b = bias.baseAddress!
            for t in 0..<n { (outBase + t * o).update(from: b, count: o) }
            beta = 1
        }
        if n == 1 {   // one token (generation): a matrix-vector product, without gemm's packing of W
            BLAS.gemv(m: o, n: i, a: weight.baseAddress!, lda: i, x: inp.baseAddress!, beta: beta, y: outBase)
            return
        }
        BLAS.gemm(transposeA: false, transposeB: true, m: n, n: o, k: i,
                  a: inp.baseAddress!, lda: i, b: weight.baseAddress!, ldb: i,
                  beta: beta, c: outBase, ldc: o)
    }

    /// Accumulates `dinp += dout · W`, `dweight += doutᵀ · inp`, `dbias += Σₜ dout`.
    /// `dinp` may be nil when the input's gradient is not needed.
    public static func backward(
        dinp: UnsafeMutableBufferPointer<Float>?,
        dweight: UnsafeMutableBufferPointer<Float>,
        dbias: UnsafeMutableBufferPointer<Float>?,
        dout: UnsafeBufferPointer<Float>,
        inp: UnsafeBufferPointer<Float>,
        weight: UnsafeBufferPointer<Float>,
        tokens n: Int, inputs i: Int, outputs o: Int
    ) {
        precondition(dout.count >= n * o && inp.count >= n * i && weight.count == o * i && dweight.count == o * i,
                     "Linear.backward: buffers do not fit (N \(n), I \(i), O \(o))")
        guard n > 0 else { return }
        if let dinp {
            precondition(dinp.count >= n * i, "Linear.backward: dinp too small")
            BLAS.gemm(transposeA: false, transposeB: false, m: n, n: i, k: o,
                      a: dout.baseAddress!, lda: o, b: weight.baseAddress!, ldb: i,
                      beta: 1, c: dinp.baseAddress!, ldc: i)
        }
        BLAS.gemm(transposeA: true, transposeB: false, m: o, n: i, k: n,
                  a: dout.baseAddress!, lda: o, b: inp.baseAddress!, ldb: i,
                  beta: 1, c: dweight.baseAddress!, ldc: i)
        if let dbias {
            precondition(dbias.count == o, "Linear.backward: dbias has \(dbias.count) elements, expected \(o)")
            let db = dbias.baseAddress!, d = dout.baseAddress!
            for t in 0..<n {
                let row = d + t * o
                for j in 0..<o { db[j] += row[j] }
            }
        }
    }
}
