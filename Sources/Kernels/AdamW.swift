import Glibc

/// AdamW with decoupled weight decay and bias correction, as `torch.optim.AdamW` computes it.
///
/// For step `t ≥ 1`, gradient `g` (already multiplied by the clipping factor):
/// `p ← p·(1 − lr·λ)`, `m ← β₁m + (1−β₁)g`, `v ← β₂v + (1−β₂)g²`,
/// `p ← p − (lr / (1−β₁ᵗ)) · m / (√v / √(1−β₂ᵗ) + ε)`.
/// The elements are split over the rank's threads (``Parallel``); the result does not depend on how.
public struct AdamW: Sendable, Codable, Equatable {
    public var beta1: Float
    public var beta2: Float
    public var epsilon: Float
    public var weightDecay: Float

    public init(beta1: Float = 0.9, beta2: Float = 0.999, epsilon: Float = 1e-8, weightDecay: Float = 0.0) {
        self.beta1 = beta1
        self.beta2 = beta2
        self.epsilon = epsilon
        self.weightDecay = weightDecay
    }

    /// Updates `parameters`, `m` and `v` in place from `gradients × gradientScale`.
    /// `decay` false skips the weight decay (norm weights and biases).
    public func update(
        parameters: UnsafeMutableBufferPointer<Float>,
        gradients: UnsafeBufferPointer<Float>,
        m: UnsafeMutableBufferPointer<Float>,
        v: UnsafeMutableBufferPointer<Float>,
        step t: Int, learningRate lr: Float, gradientScale: Float, decay: Bool
    ) {
        let count = parameters.count
        precondition(gradients.count == count && m.count == count && v.count == count, "AdamW.update: buffers differ in size")
        precondition(t >= 1, "AdamW.update: steps count from 1")
        guard count > 0 else { return }
        let p = parameters.baseAddress!, g = gradients.baseAddress!, mb = m.baseAddress!, vb = v.baseAddress!
        let b1 = beta1, b2 = beta2, eps = epsilon
        let correction1 = 1 - Float(pow(Double(b1), Double(t)))
        let correction2Root = Float((1 - pow(Double(b2), Double(t))).squareRoot())
        let stepSize = lr / correction1
        let shrink: Float = decay ? 1 - lr * weightDecay : 1
        // Elementwise: split over the rank's threads in runs of at least 32 Ki elements (each
        // element's arithmetic is the same on any thread), 16 lanes at a time. Written with SIMD
        // types because LLVM does not vectorise the scalar loop (the four buffers may alias, and
        // `squareRoot()` keeps a scalar libm fallback): the scalar loop ran one `divss`/`sqrtss` chain
        // per element. Every lane does exactly the scalar expression's operations in its order
        // (Swift does not contract them into FMAs), so the result is bitwise the scalar one's.
        Parallel.forEach(count: count, grain: 1 << 15) { elements in
            typealias Lanes = SIMD16<Float>
            let width = Lanes.scalarCount
            let b1v = Lanes(repeating: b1), b2v = Lanes(repeating: b2)
            let oneMinusB1 = Lanes(repeating: 1 - b1), oneMinusB2 = Lanes(repeating: 1 - b2)
            let scale = Lanes(repeating: gradientScale), root2 = Lanes(repeating: correction2Root)
            let epsv = Lanes(repeating: eps), shrinkv = Lanes(repeating: shrink), stepv = Lanes(repeating: stepSize)
            var i = elements.lowerBound
            while i + width <= elements.upperBound {
                let gi = UnsafeRawPointer(g + i).loadUnaligned(as: Lanes.self) * scale
                let mi = b1v * UnsafeRawPointer(mb + i).loadUnaligned(as: Lanes.self) + oneMinusB1 * gi
                let vi = b2v * UnsafeRawPointer(vb + i).loadUnaligned(as: Lanes.self) + oneMinusB2 * gi * gi
                UnsafeMutableRawPointer(mb + i).storeBytes(of: mi, as: Lanes.self)
                UnsafeMutableRawPointer(vb + i).storeBytes(of: vi, as: Lanes.self)
                let denominator = vi.squareRoot() / root2 + epsv
                let pi = UnsafeRawPointer(p + i).loadUnaligned(as: Lanes.self)
                UnsafeMutableRawPointer(p + i).storeBytes(of: pi * shrinkv - stepv * mi / denominator, as: Lanes.self)
                i += width
            }
            while i < elements.upperBound {
                let gi = g[i] * gradientScale
                let mi = b1 * mb[i] + (1 - b1) * gi
                let vi = b2 * vb[i] + (1 - b2) * gi * gi
                mb[i] = mi
                vb[i] = vi
                let denominator = vi.squareRoot() / correction2Root + eps
                p[i] = p[i] * shrink - stepSize * mi / denominator
                i += 1
            }
        }
    }
}
