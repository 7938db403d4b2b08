/// Root-mean-square layer norm as in HF Llama: `out = w ⊙ x / sqrt(mean(x²) + ε)`.
///
/// Shapes: `inp (N, C)`, `weight (C)`, `out (N, C)`; caches `rstd (N)` = `1 / sqrt(mean(x²) + ε)`.
public enum RMSNorm {
    public static func forward(
        out: UnsafeMutableBufferPointer<Float>,
        rstd: UnsafeMutableBufferPointer<Float>,
        inp: UnsafeBufferPointer<Float>,
        weight: UnsafeBufferPointer<Float>,
        tokens n: Int, channels c: Int, epsilon: Float
    ) {
        precondition(out.count >= n * c && inp.count >= n * c && rstd.count >= n && weight.count == c,
                     "RMSNorm.forward: buffers do not fit (N \(n), C \(c))")
        guard n > 0 else { return }
        let x = inp.baseAddress!, y = out.baseAddress!, w = weight.baseAddress!, r = rstd.baseAddress!
        for t in 0..<n {
            let xt = x + t * c, yt = y + t * c
            // The mean square in Double (torch's reduction is cascaded; a Float running sum over C drifts).
            let meanSquare = Float(VectorMath.sumOfSquares(UnsafeBufferPointer(start: xt, count: c)) / Double(c))
            let s = 1 / (meanSquare + epsilon).squareRoot()
            r[t] = s
            for j in 0..<c { yt[j] = w[j] * (xt[j] * s) }
        }
    }

    /// Accumulates `dinp += ∂L/∂x` and `dweight += ∂L/∂w` from `dout`.
    ///
    /// With `x̂ = x·r`: `∂L/∂w = Σₜ dout ⊙ x̂`, `∂L/∂x = r · (g − x̂ · mean(g ⊙ x̂))` where `g = dout ⊙ w`.
    public static func backward(
        dinp: UnsafeMutableBufferPointer<Float>,
        dweight: UnsafeMutableBufferPointer<Float>,
        dout: UnsafeBufferPointer<Float>,
        inp: UnsafeBufferPointer<Float>,
        weight: UnsafeBufferPointer<Float>,
        rstd: UnsafeBufferPointer<Float>,
        tokens n: Int, channels c: Int
    ) {
        precondition(dinp.count >= n * c && dout.count >= n * c && inp.count >= n * c && rstd.count >= n
                     && weight.count == c && dweight.count == c, "RMSNorm.backward: buffers do not fit (N \(n), C \(c))")
        guard n > 0 else { return }
        let dx = dinp.baseAddress!, dw = dweight.baseAddress!, dy = dout.baseAddress!
        let x = inp.baseAddress!, w = weight.baseAddress!, r = rstd.baseAddress!
        for t in 0..<n {
            let xt = x + t * c, dyt = dy + t * c, dxt = dx + t * c
            let s = r[t]
            // `Σ dout·w·x̂` in eight Double lanes (lane k sums every eighth product, as
            // ``VectorMath/sumOfSquares(_:)``): one running Double sum was a chain of dependent
            // adds the loop could not vectorise, and it held `dweight`'s update to one lane too.
            var lanes = SIMD8<Double>(repeating: 0)
            let sv = SIMD8<Float>(repeating: s)
            var j = 0
            while j + 8 <= c {
                let xhat = VectorMath.load8(xt + j) * sv
                let dyj = VectorMath.load8(dyt + j)
                let wj = VectorMath.load8(w + j)
                lanes += SIMD8<Double>(dyj * wj * xhat)
                let dwj = VectorMath.load8(dw + j) + dyj * xhat
                VectorMath.store8(dwj, dw + j)
                j += 8
            }
            var dot = lanes.sum()
            while j < c {
                let xhat = xt[j] * s
                dot += Double(dyt[j] * w[j] * xhat)
                dw[j] += dyt[j] * xhat
                j += 1
            }
            let meanDot = Float(dot / Double(c))
            for j in 0..<c {
                let xhat = xt[j] * s
                dxt[j] += s * (dyt[j] * w[j] - xhat * meanDot)
            }
        }
    }
}
