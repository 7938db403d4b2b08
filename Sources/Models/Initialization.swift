import Glibc

/// Random initialisation that depends on the seed alone, element by element.
///
/// Element `i` of tensor `k` (its ordinal in the layout) draws from a counter-based generator keyed by
/// `(seed, k, i)`, so any rank can fill any range of any unit and get the same values as a single
/// process filling everything: the weights do not depend on the number of ranks or the ZeRO stage.
/// Matrices: normal(0, `initializer_range`) as HF does; norm weights: 1; biases: 0.
public enum ParameterInitialization {
    /// Fills `destination` with elements `range` of unit `unitIndex`'s flat buffer (zero past its end: the padding).
    public static func fill(
        _ destination: UnsafeMutableBufferPointer<Float>,
        unit unitIndex: Int, elements range: Range<Int>,
        layout: ParameterLayout, config: ModelConfig, seed: UInt64
    ) {
        precondition(destination.count == range.count, "fill: destination has \(destination.count) elements, range \(range.count)")
        guard let base = destination.baseAddress else { return }
        base.update(repeating: 0, count: range.count)
        let unit = layout.units[unitIndex]
        let ordinalBase = layout.units[..<unitIndex].reduce(0) { $0 + $1.tensors.count }
        let std = Float(config.initializerRange)
        for (k, tensor) in unit.tensors.enumerated() {
            let overlap = range.clamped(to: tensor.range)
            guard !overlap.isEmpty else { continue }
            let out = base + (overlap.lowerBound - range.lowerBound)
            if tensor.name.hasSuffix("norm.weight") {
                out.update(repeating: 1, count: overlap.count)
            } else if tensor.name.hasSuffix(".bias") {
                continue
            } else {
                let key = seed &* 0x9E37_79B9_7F4A_7C15 ^ UInt64(ordinalBase + k) &* 0xD1B5_4A32_D192_ED69
                for (j, element) in overlap.enumerated() {
                    out[j] = std * standardNormal(key: key, index: UInt64(element - tensor.offset))
                }
            }
        }
    }

    /// A standard normal draw from the counter `(key, index)` (Box–Muller on two hashed uniforms).
    @inline(__always)
    static func standardNormal(key: UInt64, index: UInt64) -> Float {
        let a = mix(key &+ index &* 2 &+ 1), b = mix(key ^ (index &* 2 &+ 2) &* 0xBF58_476D_1CE4_E5B9)
        let u1 = (Double(a >> 11) + 0.5) * 0x1p-53
        let u2 = Double(b >> 11) * 0x1p-53
        return Float((-2 * log(u1)).squareRoot() * cos(2 * Double.pi * u2))
    }

    /// SplitMix64's finaliser.
    @inline(__always)
    static func mix(_ x: UInt64) -> UInt64 {
        var z = x &+ 0x9E37_79B9_7F4A_7C15
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
