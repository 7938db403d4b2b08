import Glibc
import Testing
import Kernels
import TestSupport

@Suite struct VectorMathTests {
    /// Relative error of the vectorised exp against Double `exp`, on a dense grid over its range.
    @Test func expIsAccurateToThreeTenMillionths() {
        var worst = (x: Float(0), error: 0.0)
        var x: Float = -87.3
        while x < 88.3 {
            let value = VectorMath.exp(x)
            let exact = Glibc.exp(Double(x))
            let error = abs(Double(value) - exact) / exact
            if error > worst.error { worst = (x, error) }
            x += 0.000_731
        }
        #expect(worst.error < 3e-7, "exp(\(worst.x)) is off by \(worst.error) relative")
        #expect(VectorMath.exp(0) == 1 && abs(VectorMath.exp(1) - Float(M_E)) < 1e-6)
        #expect(VectorMath.exp(-1000) < 2e-38 && VectorMath.exp(-.infinity) < 2e-38, "below the range: about 1.2e-38")
        #expect(VectorMath.exp(1000) > 2e38 && VectorMath.exp(.infinity) > 2e38, "above the range: about 2.2e38")
        #expect(VectorMath.exp(.nan).isNaN)
        #expect(abs(VectorMath.sigmoid(100) - 1) < 1e-7 && VectorMath.sigmoid(-100) < 1e-30)
    }

    @Test func exponentiateSumsAndWritesBack() {
        var values: [Float] = (0..<21).map { Float($0) * 0.37 - 3 }
        let expected = values.map { Glibc.exp(Double($0) - 2) }
        let sum = values.withUnsafeMutableBufferPointer { VectorMath.exponentiate($0.baseAddress!, count: 21, shift: 2) }
        #expect(abs(Double(sum) - expected.reduce(0, +)) < 1e-5 * expected.reduce(0, +))
        for (a, b) in zip(values, expected) { #expect(abs(Double(a) - b) < 1e-6 * b) }
        #expect(values.withUnsafeBufferPointer { VectorMath.maximum($0.baseAddress!, count: 21) } == values.max())
    }

    /// The inputs (a multiple of eight, padded with `1`) where `lanes` differs from `scalar` on some
    /// lane, NaN matching NaN.
    static func lanesDiffering(_ inputs: [Float], lanes: (SIMD8<Float>) -> SIMD8<Float>, scalar: (Float) -> Float) -> [Float] {
        var inputs = inputs
        while inputs.count % 8 != 0 { inputs.append(1) }
        var differing: [Float] = []
        for start in stride(from: 0, to: inputs.count, by: 8) {
            let x = SIMD8<Float>(inputs[start..<(start + 8)]), y = lanes(x)
            for lane in 0..<8 {
                let expected = scalar(x[lane])
                if !(expected.bitPattern == y[lane].bitPattern || (expected.isNaN && y[lane].isNaN)) { differing.append(x[lane]) }
            }
        }
        return differing
    }

    /// The eight-lane exp is the scalar exp, bit for bit, on a grid over the whole range, past both
    /// clamps, at ±∞, ±0 and NaN (every lane position; the softmax's results rest on this).
    @Test func simdExpIsTheScalarExp() {
        var inputs: [Float] = [-.infinity, .infinity, .nan, 0, -0.0, -87.3, 88.3, -87.31, 88.31, -1000, 1000,
                               .leastNonzeroMagnitude, -.leastNonzeroMagnitude, .greatestFiniteMagnitude]
        var x: Float = -95
        while x < 95 { inputs.append(x); x += 0.013_7 }
        let differing = Self.lanesDiffering(inputs, lanes: VectorMath.exp, scalar: VectorMath.exp)
        #expect(differing.isEmpty, "SIMD exp differs from the scalar exp at \(differing.prefix(8)) (\(differing.count) inputs)")
    }

    /// The eight-lane sigmoid (SwiGLU's kernels) is the scalar one, bit for bit, across and past the
    /// exp's clamps.
    @Test func simdSigmoidIsTheScalarSigmoid() {
        var inputs: [Float] = [-.infinity, .infinity, .nan, 0, -0.0, -88.3, 87.3, -1000, 1000]
        var x: Float = -100
        while x < 100 { inputs.append(x); x += 0.017_3 }
        let differing = Self.lanesDiffering(inputs, lanes: VectorMath.sigmoid, scalar: VectorMath.sigmoid)
        #expect(differing.isEmpty, "SIMD sigmoid differs from the scalar sigmoid at \(differing.prefix(8)) (\(differing.count) inputs)")
    }

    /// The eight-lane dot product (attention backward's `rowsum(dO ⊙ O)`) against a Double sum, for
    /// counts with and without a tail, including none.
    @Test func dotMatchesADoubleSum() {
        var random = TestRandom(seed: 5)
        for count in [0, 1, 7, 8, 9, 16, 23, 64, 67] {
            let a = random.normals(count), b = random.normals(count)
            let dot = a.withUnsafeBufferPointer { a in b.withUnsafeBufferPointer { b in
                VectorMath.dot(a.baseAddress ?? UnsafePointer(bitPattern: 8)!, b.baseAddress ?? UnsafePointer(bitPattern: 8)!, count: count)
            } }
            let expected = zip(a, b).reduce(0.0) { $0 + Double($1.0) * Double($1.1) }
            #expect(abs(Double(dot) - expected) <= 1e-6 * max(1, zip(a, b).reduce(0.0) { $0 + abs(Double($1.0 * $1.1)) }), "count \(count): \(dot) vs \(expected)")
        }
    }
}
