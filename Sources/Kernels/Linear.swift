/// A dense layer in HF layout: `out = inp · Wᵀ + b`, with `W` stored `(O, I)` row-major.
///
/// Shapes: `inp (N, I)`, `weight (O, I)`, `bias (O)` or none, `out (N, O)`.
/// Backward caches nothing beyond the layer input, which the caller keeps.
///
/// Adjacent layers that read the same input are one `Linear` whose weight is their weights stacked:
/// q/k/v (`(Hq·d + 2·Hkv·d, C)`) and gate/up (`(2F, C)`) sit one after another in a layer unit's
/// flat buffer, so the decoder layer runs each group as one gemm (larger `O`, one packing of the
/// input) with the same per-output sums as separate products.
public enum Linear {
    /// `out = inp · Wᵀ (+ b)`, or with `accumulate` `out += inp · Wᵀ` (a residual connection
    /// added by the gemm's `beta = 1` instead of a separate pass; no bias then).
    /// `outputStride`: the row stride of `out` in floats (at least `O`; default `O`). `splitTokens`:
    /// the tokens split over the rank's threads, one single-threaded gemm each
    /// (``BLAS/gemmSplittingRows(transposeB:m:n:k:alpha:a:lda:b:ldb:beta:c:ldc:)``: for shapes the
    /// library threads poorly).
    public static func forward(
        out: UnsafeMutableBufferPointer<Float>,
        inp: UnsafeBufferPointer<Float>,
        weight: UnsafeBufferPointer<Float>,
        bias: UnsafeBufferPointer<Float>?,
        tokens n: Int, inputs i: Int, outputs o: Int,
        outputStride: Int? = nil,
        accumulate: Bool = false,
        splitTokens: Bool = false
    ) {
        let ldo = outputStride ?? o
        precondition(ldo >= o && inp.count >= n * i && out.count >= BLAS.stridedCount(rows: n, columns: o, stride: ldo) && weight.count == o * i,
                     "Linear.forward: buffers do not fit (N \(n), I \(i), O \(o), output stride \(ldo))")
        precondition(!(accumulate && bias != nil), "Linear.forward: a bias with accumulate")
        guard n > 0 else { return }
        let outBase = out.baseAddress!
        var beta: Float = accumulate ? 1 : 0
        if let bias {
            precondition(bias.count == o, "Linear.forward: bias has \(bias.count) elements, expected \(o)")
            let b = bias.baseAddress!
            for t in 0..<n { (outBase + t * ldo).update(from: b, count: o) }
            beta = 1
        }
        if n == 1 {   // one token (generation): a matrix-vector product, without gemm's packing of W (one row: no stride)
            BLAS.gemv(m: o, n: i, a: weight.baseAddress!, lda: i, x: inp.baseAddress!, beta: beta, y: outBase)
            return
        }
        if splitTokens {
            BLAS.gemmSplittingRows(transposeB: true, m: n, n: o, k: i, a: inp.baseAddress!, lda: i,
                                   b: weight.baseAddress!, ldb: i, beta: beta, c: outBase, ldc: ldo)
            return
        }
        BLAS.gemm(transposeA: false, transposeB: true, m: n, n: o, k: i,
                  a: inp.baseAddress!, lda: i, b: weight.baseAddress!, ldb: i,
                  beta: beta, c: outBase, ldc: ldo)
    }

    /// Accumulates `dweight += doutᵀ · inp`, `dbias += Σₜ dout` and `dinp += dout · W` (or, when
    /// `accumulateInputGradient` is false, writes `dinp = dout · W`: no zeroed scratch needed).
    /// `dinp` may be nil when the input's gradient is not needed. The weight gradient is taken first,
    /// so `dinp` may be the same memory as `inp` when it is written, not accumulated.
    /// `outputGradientStride`: the row stride of `dout` in floats (at least `O`; default `O`).
    public static func backward(
        dinp: UnsafeMutableBufferPointer<Float>?,
        dweight: UnsafeMutableBufferPointer<Float>,
        dbias: UnsafeMutableBufferPointer<Float>?,
        dout: UnsafeBufferPointer<Float>,
        inp: UnsafeBufferPointer<Float>,
        weight: UnsafeBufferPointer<Float>,
        tokens n: Int, inputs i: Int, outputs o: Int,
        outputGradientStride: Int? = nil,
        accumulateInputGradient: Bool = true
    ) {
        let ldd = outputGradientStride ?? o
        precondition(ldd >= o && dout.count >= BLAS.stridedCount(rows: n, columns: o, stride: ldd) && inp.count >= n * i && weight.count == o * i && dweight.count == o * i,
                     "Linear.backward: buffers do not fit (N \(n), I \(i), O \(o), output gradient stride \(ldd))")
        guard n > 0 else { return }
        BLAS.gemm(transposeA: true, transposeB: false, m: o, n: i, k: n,
                  a: dout.baseAddress!, lda: ldd, b: inp.baseAddress!, ldb: i,
                  beta: 1, c: dweight.baseAddress!, ldc: i)
        if let dinp {
            inputGradient(dinp: dinp, dout: dout, weight: weight, tokens: n, inputs: i, outputs: o,
                          outputGradientStride: ldd, accumulate: accumulateInputGradient)
        }
        if let dbias {
            precondition(dbias.count == o, "Linear.backward: dbias has \(dbias.count) elements, expected \(o)")
            let db = dbias.baseAddress!, d = dout.baseAddress!
            for t in 0..<n {
                let row = d + t * ldd
                for j in 0..<o { db[j] += row[j] }
            }
        }
    }

    /// The input's gradient alone: `dinp += dout · W` (`accumulate`) or `dinp = dout · W`, for a
    /// caller that needs it before the weight gradient (the MLP's down projection, whose input the
    /// SwiGLU backward recomputes in the same pass that consumes this gradient). Shapes as
    /// ``backward(dinp:dweight:dbias:dout:inp:weight:tokens:inputs:outputs:outputGradientStride:accumulateInputGradient:)``.
    public static func inputGradient(
        dinp: UnsafeMutableBufferPointer<Float>,
        dout: UnsafeBufferPointer<Float>,
        weight: UnsafeBufferPointer<Float>,
        tokens n: Int, inputs i: Int, outputs o: Int,
        outputGradientStride: Int? = nil,
        accumulate: Bool
    ) {
        let ldd = outputGradientStride ?? o
        precondition(ldd >= o && dout.count >= BLAS.stridedCount(rows: n, columns: o, stride: ldd) && weight.count == o * i && dinp.count >= n * i,
                     "Linear.inputGradient: buffers do not fit (N \(n), I \(i), O \(o), output gradient stride \(ldd))")
        guard n > 0 else { return }
        BLAS.gemm(transposeA: false, transposeB: false, m: n, n: i, k: o,
                  a: dout.baseAddress!, lda: ldd, b: weight.baseAddress!, ldb: i,
                  beta: accumulate ? 1 : 0, c: dinp.baseAddress!, ldc: i)
    }
}
