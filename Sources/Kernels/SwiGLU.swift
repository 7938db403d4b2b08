import Glibc

/// The gated activation of Llama's MLP: `out = silu(gate) ⊙ up`, `silu(g) = g · σ(g)`.
///
/// Two layouts. The separate one: `gate (N, F)`, `up (N, F)`, `out (N, F)`; backward needs `gate`
/// and `up` (cached by the caller). The fused one, which the decoder layer uses: `gateUp (N, 2F)`,
/// each row `[gate | up]` as one gemm against the adjacent `gate_proj` and `up_proj` weights writes
/// it; its backward is one pass over that cache, in place (``backward(product:gateUp:tokens:width:stride:)``),
/// so σ is evaluated once per element in the backward and no `dgate`/`dup` scratch is needed.
///
/// The fused kernels take the cache's row stride (``rowStride(width:)``: rows padded where `2F` is a
/// multiple of 256). Every kernel splits its rows over the rank's threads (``Parallel/forEach(count:grain:_:)``).
public enum SwiGLU {
    /// Elements below which a thread of its own is not worth its dispatch.
    static let grain = 16_384

    /// The row stride, in floats, at which a `(N, 2F)` gate/up cache is kept: `2F`, plus 32 when `2F`
    /// is a multiple of 256 (rows a multiple of 1 KiB apart; ``BLAS/paddedStride(columns:)``).
    ///
    /// The cache is the `A` operand, transposed, of the layer's gate/up weight gradient
    /// (`dW = dgateUpᵀ · x`, m = 2F, k = tokens), which reads it down its columns: rows 12 KiB apart
    /// (SmolLM2: 2F = 3072) fall on the same few L1 sets. oneDNN 2.6 ran that product at 190–200
    /// GFLOP/s on one Zen 5 core against 231–233 with rows of 3104 or 3136 floats (and 214 at 3080,
    /// 219 at 3088); the forward (NT, the cache as `C`) and the input gradient (NN, as `A`) were
    /// unchanged within ±3% by any of those strides.
    public static func rowStride(width f: Int) -> Int { BLAS.paddedStride(columns: 2 * f) }

    // The kernels run eight lanes at a time: the same operations per lane as the scalar tails
    // (``VectorMath/sigmoid(_:)-(SIMD8<Float>)`` is bitwise the scalar's), so results do not depend on
    // where a row or a thread's range starts.

    public static func forward(
        out: UnsafeMutableBufferPointer<Float>,
        gate: UnsafeBufferPointer<Float>,
        up: UnsafeBufferPointer<Float>,
        count: Int
    ) {
        precondition(out.count >= count && gate.count >= count && up.count >= count, "SwiGLU.forward: buffers too small")
        guard count > 0 else { return }
        let y = out.baseAddress!, g = gate.baseAddress!, u = up.baseAddress!
        Parallel.forEach(count: count, grain: grain) { range in
            var i = range.lowerBound
            while i + 8 <= range.upperBound {
                let gi = VectorMath.load8(g + i)
                VectorMath.store8(gi * VectorMath.sigmoid(gi) * VectorMath.load8(u + i), y + i)
                i += 8
            }
            while i < range.upperBound { y[i] = g[i] * VectorMath.sigmoid(g[i]) * u[i]; i += 1 }
        }
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
        Parallel.forEach(count: count, grain: grain) { range in
            for i in range {
                let gi = g[i]
                let sigma = VectorMath.sigmoid(gi)
                du[i] += dy[i] * gi * sigma
                dg[i] += dy[i] * u[i] * sigma * (1 + gi * (1 - sigma))
            }
        }
    }

    /// Fused layout, forward: `out[t, j] = silu(gateUp[t, j]) · gateUp[t, F + j]`.
    ///
    /// Shapes: `gateUp (N, 2F)` with rows `stride` floats apart (at least `2F`; default `2F`: see
    /// ``rowStride(width:)``), `out (N, F)` with `F = width`.
    public static func forward(
        out: UnsafeMutableBufferPointer<Float>,
        gateUp: UnsafeBufferPointer<Float>,
        tokens n: Int, width f: Int, stride: Int? = nil
    ) {
        let stride = stride ?? 2 * f
        precondition(stride >= 2 * f && out.count >= n * f && gateUp.count >= BLAS.stridedCount(rows: n, columns: 2 * f, stride: stride),
                     "SwiGLU.forward: buffers do not fit (N \(n), F \(f), stride \(stride))")
        guard n > 0 && f > 0 else { return }
        let y = out.baseAddress!, gu = gateUp.baseAddress!
        Parallel.forEach(count: n, grain: max(1, grain / f)) { rows in
            for t in rows {
                let g = gu + t * stride, u = g + f, yt = y + t * f
                var j = 0
                while j + 8 <= f {
                    let gj = VectorMath.load8(g + j)
                    VectorMath.store8(gj * VectorMath.sigmoid(gj) * VectorMath.load8(u + j), yt + j)
                    j += 8
                }
                while j < f { yt[j] = g[j] * VectorMath.sigmoid(g[j]) * u[j]; j += 1 }
            }
        }
    }

    /// Fused layout, the backward in one pass over the forward's cached `gateUp`: on entry `product`
    /// holds `∂L/∂out (N, F)` (the down projection's input gradient); on return it holds the forward's
    /// `out` again, recomputed (the down projection's weight gradient needs it), and `gateUp` holds
    /// `∂L/∂(gate, up)` in place: `∂L/∂gate = ∂L/∂out · up · σ(g)(1 + g(1 − σ(g)))`,
    /// `∂L/∂up = ∂L/∂out · silu(g)` (written, not accumulated).
    ///
    /// One pass: σ is evaluated once for the recompute and both derivatives, each element of `product`
    /// read (its gradient) before it is written (the output), and nothing else reads `gateUp` after
    /// the forward, so no scratch is needed. (Until 2026-12-07 two passes: the derivatives first, the
    /// multiplication by `∂L/∂out` after the down projection's gemms; the same operations in the same
    /// order per element, so the same bits.)
    public static func backward(
        product: UnsafeMutableBufferPointer<Float>,
        gateUp: UnsafeMutableBufferPointer<Float>,
        tokens n: Int, width f: Int, stride: Int? = nil
    ) {
        let stride = stride ?? 2 * f
        precondition(stride >= 2 * f && product.count >= n * f && gateUp.count >= BLAS.stridedCount(rows: n, columns: 2 * f, stride: stride),
                     "SwiGLU.backward: buffers do not fit (N \(n), F \(f), stride \(stride))")
        guard n > 0 && f > 0 else { return }
        let y = product.baseAddress!, gu = gateUp.baseAddress!
        Parallel.forEach(count: n, grain: max(1, grain / f)) { rows in
            for t in rows {
                let g = gu + t * stride, u = g + f, yt = y + t * f
                var j = 0
                while j + 8 <= f {
                    let gj = VectorMath.load8(g + j), uj = VectorMath.load8(u + j), dy = VectorMath.load8(yt + j)
                    let sigma = VectorMath.sigmoid(gj), silu = gj * sigma
                    VectorMath.store8(silu * uj, yt + j)
                    VectorMath.store8(uj * sigma * (1 + gj * (1 - sigma)) * dy, g + j)
                    VectorMath.store8(silu * dy, u + j)
                    j += 8
                }
                while j < f {
                    let gj = g[j], uj = u[j], dy = yt[j]
                    let sigma = VectorMath.sigmoid(gj), silu = gj * sigma
                    yt[j] = silu * uj
                    g[j] = uj * sigma * (1 + gj * (1 - sigma)) * dy
                    u[j] = silu * dy
                    j += 1
                }
            }
        }
    }
}
