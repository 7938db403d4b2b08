import Glibc
import Testing
import Kernels

@Suite struct VectorMathTests {
    /// Relative error of the vectorised exp against Double `exp`, on a dense grid over its range.
    @Test func expIsAccurateToThreeTenMillionths() {
        var worst = (x: Float(0), error: 0.0)
        var x: Float = -87
        while x < 88 {
            let lanes = SIMD8<Float>((0..<8).map { x + Float($0) * 0.0013 })
            let values = VectorMath.exp(lanes)
            for lane in 0..<8 {
                let exact = Glibc.exp(Double(lanes[lane]))
                let error = abs(Double(values[lane]) - exact) / exact
                if error > worst.error { worst = (lanes[lane], error) }
            }
            x += 0.0173
        }
        #expect(worst.error < 3e-7, "exp(\(worst.x)) is off by \(worst.error) relative")
        let edges = VectorMath.exp(SIMD8<Float>(-100, -87.5, 0, 1, 89, .infinity, -.infinity, 88))
        #expect(edges[0] == 0 && edges[1] == 0 && edges[2] == 1 && edges[4] == .infinity && edges[5] == .infinity && edges[6] == 0)
        #expect(abs(edges[3] - Float(M_E)) < 1e-6)
    }

    @Test func exponentiateSumsAndWritesBack() {
        var values: [Float] = (0..<21).map { Float($0) * 0.37 - 3 }
        let expected = values.map { Glibc.exp(Double($0) - 2) }
        let sum = values.withUnsafeMutableBufferPointer { VectorMath.exponentiate($0.baseAddress!, count: 21, shift: 2) }
        #expect(abs(Double(sum) - expected.reduce(0, +)) < 1e-5 * expected.reduce(0, +))
        for (a, b) in zip(values, expected) { #expect(abs(Double(a) - b) < 1e-6 * b) }
        #expect(values.withUnsafeBufferPointer { VectorMath.maximum($0.baseAddress!, count: 21) } == values.max())
    }
}
