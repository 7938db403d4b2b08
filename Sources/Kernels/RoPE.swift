import Glibc

/// Rotary position embedding in HF's rotate-half convention.
///
/// For head dimension `d`, `i < d/2`, inverse frequency `θᵢ` and angle `a = pos · θᵢ`:
/// `y[i] = m·(x[i]·cos a − x[i + d/2]·sin a)`, `y[i + d/2] = m·(x[i + d/2]·cos a + x[i]·sin a)`,
/// with `m` the attention factor (1 except for YaRN, where transformers multiplies cos and sin by it).
/// Unscaled RoPE has `θᵢ = base^(−2i/d)`; the scaled variants (linear, dynamic NTK, YaRN, Llama 3)
/// only change `θ` and `m` and are computed by the model (`ModelConfig.rotaryFrequencies`).
/// The angles are computed in Float as transformers does (`inv_freq @ position_ids` in float32), then
/// cos/sin of each angle is rounded from Double and multiplied by `m` in Float (`emb.cos() * attention_scaling`).
public struct RotaryTable: Sendable {
    public let headDimension: Int
    public let maxPositions: Int
    /// `θᵢ`, `d/2` of them.
    public let inverseFrequencies: [Float]
    /// `m`, which multiplies every cos and sin.
    public let attentionFactor: Float
    /// `(maxPositions, d/2)` row-major.
    public let cosines: [Float]
    public let sines: [Float]

    /// A table for positions `0 ..< maxPositions` from `d/2` inverse frequencies (`d = 2 · inverseFrequencies.count`).
    public init(inverseFrequencies: [Float], attentionFactor: Float = 1, maxPositions: Int) {
        precondition(!inverseFrequencies.isEmpty && maxPositions >= 0, "RotaryTable: no frequencies or negative length")
        let half = inverseFrequencies.count
        headDimension = 2 * half
        self.maxPositions = maxPositions
        self.inverseFrequencies = inverseFrequencies
        self.attentionFactor = attentionFactor
        var cosines = [Float](repeating: 0, count: maxPositions * half)
        var sines = cosines
        for p in 0..<maxPositions {
            for i in 0..<half {
                let angle = Float(p) * inverseFrequencies[i]
                cosines[p * half + i] = Float(cos(Double(angle))) * attentionFactor
                sines[p * half + i] = Float(sin(Double(angle))) * attentionFactor
            }
        }
        self.cosines = cosines
        self.sines = sines
    }

    /// Unscaled RoPE: `θᵢ = 1 / base^(2i/d)` in Float, as transformers' default `inv_freq`.
    public init(headDimension d: Int, maxPositions: Int, base: Double) {
        precondition(d % 2 == 0 && d > 0, "RotaryTable: head dimension \(d) must be even and positive")
        self.init(inverseFrequencies: Self.defaultInverseFrequencies(headDimension: d, base: base), maxPositions: maxPositions)
    }

    /// `1 / base^(2i/d)` for `i < d/2`, in Float (transformers: `1.0 / (base ** (arange(0, d, 2).float() / d))`).
    public static func defaultInverseFrequencies(headDimension d: Int, base: Double) -> [Float] {
        (0..<(d / 2)).map { 1 / powf(Float(base), Float(2 * $0) / Float(d)) }
    }
}

public enum RoPE {
    /// Elements below which a thread of its own is not worth its dispatch.
    static let grain = 16_384

    /// Rotates `x (N, H, d)` in place by each token's position (and scales by the attention factor);
    /// `inverse` applies the transpose, `m·R(−a)` (the backward). Tokens are split over the rank's
    /// threads (``Parallel/forEach(count:grain:_:)``); the result does not depend on how.
    public static func apply(
        _ x: UnsafeMutableBufferPointer<Float>,
        positions: UnsafeBufferPointer<Int32>,
        heads: Int, table: RotaryTable, inverse: Bool = false
    ) {
        let n = positions.count, d = table.headDimension, half = d / 2
        precondition(x.count >= n * heads * d, "RoPE.apply: buffer too small (N \(n), H \(heads), d \(d))")
        guard n > 0 else { return }
        let sign: Float = inverse ? -1 : 1
        let base = x.baseAddress!
        for t in 0..<n {
            precondition(positions[t] >= 0 && Int(positions[t]) < table.maxPositions,
                         "RoPE.apply: position \(positions[t]) beyond the table's \(table.maxPositions)")
        }
        table.cosines.withUnsafeBufferPointer { cosines in
            table.sines.withUnsafeBufferPointer { sines in
                // Tokens split over the rank's threads (each element's arithmetic the same on any thread).
                Parallel.forEach(count: n, grain: max(1, grain / (heads * d))) { tokens in
                    for t in tokens {
                        let p = Int(positions[t])
                        let c = cosines.baseAddress! + p * half, s = sines.baseAddress! + p * half
                        for h in 0..<heads {
                            let v = base + (t * heads + h) * d
                            // Eight lanes at a time (the scalar tail's operations on each lane: bitwise
                            // the same rotation), so the loop does not depend on LLVM proving that `v`
                            // and the table do not overlap.
                            var i = 0
                            while i + 8 <= half {
                                let x1 = VectorMath.load8(v + i), x2 = VectorMath.load8(v + i + half), ci = VectorMath.load8(c + i), sn = sign * VectorMath.load8(s + i)
                                VectorMath.store8(x1 * ci - x2 * sn, v + i)
                                VectorMath.store8(x2 * ci + x1 * sn, v + i + half)
                                i += 8
                            }
                            while i < half {
                                let x1 = v[i], x2 = v[i + half], sn = sign * s[i]
                                v[i] = x1 * c[i] - x2 * sn
                                v[i + half] = x2 * c[i] + x1 * sn
                                i += 1
                            }
                        }
                    }
                }
            }
        }
    }
}
