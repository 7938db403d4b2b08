import Glibc

/// Rotary position embedding in HF's rotate-half convention.
///
/// For head dimension `d` and `i < d/2`, with `θᵢ = base^(−2i/d)` and angle `a = pos · θᵢ`:
/// `y[i] = x[i]·cos a − x[i + d/2]·sin a`, `y[i + d/2] = x[i + d/2]·cos a + x[i]·sin a`.
/// The inverse frequencies and angles are computed in Float as transformers does, then cos/sin of
/// each angle is rounded from Double.
public struct RotaryTable: Sendable {
    public let headDimension: Int
    public let maxPositions: Int
    /// `(maxPositions, d/2)` row-major.
    public let cosines: [Float]
    public let sines: [Float]

    public init(headDimension d: Int, maxPositions: Int, base: Double) {
        precondition(d % 2 == 0, "RotaryTable: head dimension \(d) must be even")
        headDimension = d
        self.maxPositions = maxPositions
        let half = d / 2
        var inverse = [Float](repeating: 0, count: half)
        for i in 0..<half { inverse[i] = 1 / powf(Float(base), Float(2 * i) / Float(d)) }
        var cosines = [Float](repeating: 0, count: maxPositions * half)
        var sines = cosines
        for p in 0..<maxPositions {
            for i in 0..<half {
                let angle = Float(p) * inverse[i]
                cosines[p * half + i] = Float(cos(Double(angle)))
                sines[p * half + i] = Float(sin(Double(angle)))
            }
        }
        self.cosines = cosines
        self.sines = sines
    }
}

public enum RoPE {
    /// Rotates `x (N, H, d)` in place by each token's position; `inverse` rotates by `−a` (the backward).
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
        table.cosines.withUnsafeBufferPointer { cosines in
            table.sines.withUnsafeBufferPointer { sines in
                for t in 0..<n {
                    let p = Int(positions[t])
                    precondition(p >= 0 && p < table.maxPositions, "RoPE.apply: position \(p) beyond the table's \(table.maxPositions)")
                    let c = cosines.baseAddress! + p * half, s = sines.baseAddress! + p * half
                    for h in 0..<heads {
                        let v = base + (t * heads + h) * d
                        for i in 0..<half {
                            let x1 = v[i], x2 = v[i + half], sn = sign * s[i]
                            v[i] = x1 * c[i] - x2 * sn
                            v[i + half] = x2 * c[i] + x1 * sn
                        }
                    }
                }
            }
        }
    }
}
