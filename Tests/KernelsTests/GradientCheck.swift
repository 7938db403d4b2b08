import Testing
import TestSupport
@testable import Kernels

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
