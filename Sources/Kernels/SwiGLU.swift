import Glibc

/// The gated activation of Llama's MLP: `out = silu(gate) ⊙ up`, `silu(g) = g · σ(g)`.
///
/// Shapes: `gate (N, F)`, `up (N, F)`, `out (N, F)`. Backward needs `gate` and `up` (cached by the caller).
public enum SwiGLU {
    public static func forward(
        out: UnsafeMutableBufferPointer<Float>,
        gate: UnsafeBufferPointer<Float>,
        up: UnsafeBufferPointer<Float>,
        count: Int
    ) {
        precondition(out.count >= count && gate.count >= count && up.count >= count, "SwiGLU.forward: buffers too small")
        guard count > 0 else { return }
        let y = out.baseAddress!, g = gate.baseAddress!, u = up.baseAddress!
        for i in 0..<count { y[i] = g[i] * VectorMath.sigmoid(g[i]) * u[i] }
    }

    /// Accumulates `dgate += dout ⊙ up ⊙ σ(g)(1 + g(1 − σ(g)))` and `dup += dout ⊙ silu(g)`.
    public static func backward(
        dgate: UnsafeMutableBufferPointer<Float>,
        dup: UnsafeMutableBufferPointer<Float>,
        dout: UnsafeBufferPointer<Float>,
        gate: UnsafeBufferPointer<Float>,
        up: UnsafeBufferPointer<Float>,
        count: Int
    ) {
        precondition(dgate.count >= count && dup.count >= count && dout.count >= count
                     && gate.count >= count && up.count >= count, "SwiGLU.backward: buffers too small")
        guard count > 0 else { return }
        let dg = dgate.baseAddress!, du = dup.baseAddress!, dy = dout.baseAddress!
        let g = gate.baseAddress!, u = up.baseAddress!
        for i in 0..<count {
            let gi = g[i]
            let sigma = VectorMath.sigmoid(gi)
            du[i] += dy[i] * gi * sigma
            dg[i] += dy[i] * u[i] * sigma * (1 + gi * (1 - sigma))
        }
    }
}
