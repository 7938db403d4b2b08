import Testing
@testable import Kernels

/// A small deterministic generator for test data.
struct TestRandom {
    var state: UInt64
    init(seed: UInt64) { state = seed &+ 0x9E37_79B9_7F4A_7C15 }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
    mutating func uniform() -> Float { Float(Double(next() >> 11) * 0x1p-53) }
    mutating func normal(_ std: Float = 1) -> Float {
        let u1 = max(Double(next() >> 11) * 0x1p-53, 1e-12), u2 = Double(next() >> 11) * 0x1p-53
        return std * Float((-2 * _log(u1)).squareRoot() * _cos(2 * .pi * u2))
    }
    mutating func normals(_ count: Int, std: Float = 1) -> [Float] { (0..<count).map { _ in normal(std) } }
}

import Glibc
@inline(__always) func _log(_ x: Double) -> Double { Glibc.log(x) }
@inline(__always) func _cos(_ x: Double) -> Double { Glibc.cos(x) }

/// Checks an analytic gradient against central finite differences along random directions and at
/// the largest-gradient coordinates. fp32 forward, Double loss: the stated tolerance is relative,
/// `|numeric − analytic| ≤ tolerance · max(|analytic|, floor)`.
func expectGradient(
    _ name: String, at x: inout [Float], analytic: [Float], loss: ([Float]) -> Double,
    epsilon: Float = 1e-2, tolerance: Double = 2e-2, directions: Int = 3, coordinates: Int = 4,
    sourceLocation: SourceLocation = #_sourceLocation
) {
    precondition(x.count == analytic.count)
    var random = TestRandom(seed: UInt64(name.utf8.reduce(7) { $0 &* 31 &+ UInt64($1) }))
    let gradientScale = analytic.map { abs(Double($0)) }.max() ?? 0
    #expect(gradientScale > 0, "\(name): analytic gradient is all zero", sourceLocation: sourceLocation)
    func numeric(along d: [Float]) -> Double {
        let plus = zip(x, d).map { $0 + epsilon * $1 }, minus = zip(x, d).map { $0 - epsilon * $1 }
        return (loss(plus) - loss(minus)) / (2 * Double(epsilon))
    }
    for k in 0..<directions {
        let d = random.normals(x.count)
        let expected = zip(analytic, d).reduce(0.0) { $0 + Double($1.0) * Double($1.1) }
        let found = numeric(along: d)
        let floor = gradientScale * 0.05
        #expect(abs(found - expected) <= tolerance * max(abs(expected), floor),
                "\(name): direction \(k): finite difference \(found), analytic \(expected)", sourceLocation: sourceLocation)
    }
    let largest = analytic.indices.sorted { abs(analytic[$0]) > abs(analytic[$1]) }.prefix(coordinates)
    for i in largest {
        var d = [Float](repeating: 0, count: x.count)
        d[i] = 1
        let found = numeric(along: d)
        #expect(abs(found - Double(analytic[i])) <= tolerance * max(abs(Double(analytic[i])), gradientScale * 0.05),
                "\(name): element \(i): finite difference \(found), analytic \(analytic[i])", sourceLocation: sourceLocation)
    }
}

/// `Σ out ⊙ r`, accumulated in Double.
func weightedSum(_ out: [Float], _ r: [Float]) -> Double {
    zip(out, r).reduce(0.0) { $0 + Double($1.0) * Double($1.1) }
}
