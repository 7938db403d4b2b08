import Glibc

/// A small deterministic generator for test data (SplitMix64, Box–Muller normals).
public struct TestRandom: Sendable {
    var state: UInt64
    public init(seed: UInt64) { state = seed &+ 0x9E37_79B9_7F4A_7C15 }

    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    public mutating func uniform() -> Float { Float(Double(next() >> 11) * 0x1p-53) }

    public mutating func normal(_ std: Float = 1) -> Float {
        let u1 = max(Double(next() >> 11) * 0x1p-53, 1e-12), u2 = Double(next() >> 11) * 0x1p-53
        return std * Float((-2 * Glibc.log(u1)).squareRoot() * Glibc.cos(2 * .pi * u2))
    }

    public mutating func normals(_ count: Int, std: Float = 1) -> [Float] { (0..<count).map { _ in normal(std) } }
}
