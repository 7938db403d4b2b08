/// A fast `eˣ` for the softmax and SiLU loops, written so that LLVM vectorises the loops around it.
///
/// Range reduction `x = n·ln2 + r` with `|r| ≤ ln2/2` (ln2 split in two parts, Cephes' constants),
/// `n` rounded by the 1.5·2²³ trick (its bits then hold `n`), a degree-6 Taylor polynomial for `eʳ`,
/// and `2ⁿ` built in the exponent bits: no float→int conversion, no branch, no libm call. Relative
/// error ≤ 3e-7 on [−87.3, 88.3] (checked against Double `exp` in `VectorMathTests`); inputs are
/// clamped to that range (below it the result is about 1.2e-38 instead of a subnormal, above it
/// 2.2e38 instead of +∞), NaN stays NaN. The classifier's 49 152-wide softmax rows run about 8× faster
/// than with a per-element `expf` call.
public enum VectorMath {
    @inline(__always)
    public static func exp(_ x: Float) -> Float {
        let clamped = Swift.min(Swift.max(x, -87.3), 88.3)
        let shifted = clamped * 1.442_695_04 + 12_582_912  // 1.5·2²³: rounds to the nearest integer
        let n = shifted - 12_582_912
        var r = clamped - n * 0.693_359_375
        r = r + n * 2.121_944_4e-4
        var p: Float = 1.0 / 720
        p = p * r + 1.0 / 120
        p = p * r + 1.0 / 24
        p = p * r + 1.0 / 6
        p = p * r + 0.5
        p = p * r + 1
        p = p * r + 1
        // The low bits of `shifted` hold n (two's complement): 2ⁿ has exponent bits n + 127.
        let scale = Float(bitPattern: (shifted.bitPattern &- 0x4B40_0000 &+ 127) &<< 23)
        return x.isNaN ? x : p * scale
    }

    /// ``exp(_:)`` on eight lanes at once: the same operations in the same order on each lane, so
    /// every lane is bitwise the scalar function's result (Swift does not contract `a * b + c` into
    /// an FMA). The bit tricks are reinterpretations (`unsafeBitCast`), never conversions: a
    /// float→int conversion through the generic SIMD initialisers costs more than the whole `exp`.
    @inline(__always)
    public static func exp(_ x: SIMD8<Float>) -> SIMD8<Float> {
        // The clamp as the scalar's `min(max(x, lo), hi)` (a NaN lane stays NaN), spelled with masks:
        // the generic `pointwiseMin`/`pointwiseMax` were not inlined across modules (a call per 8 lanes).
        let lower = SIMD8<Float>(repeating: -87.3), upper = SIMD8<Float>(repeating: 88.3)
        var clamped = x
        clamped.replace(with: lower, where: clamped .< lower)
        clamped.replace(with: upper, where: upper .< clamped)
        let shifted = clamped * 1.442_695_04 + 12_582_912
        let n = shifted - 12_582_912
        var r = clamped - n * 0.693_359_375
        r = r + n * 2.121_944_4e-4
        var p = SIMD8<Float>(repeating: 1.0 / 720)
        p = p * r + 1.0 / 120
        p = p * r + 1.0 / 24
        p = p * r + 1.0 / 6
        p = p * r + 0.5
        p = p * r + 1
        p = p * r + 1
        let bits = (unsafeBitCast(shifted, to: SIMD8<UInt32>.self) &- 0x4B40_0000 &+ 127) &<< 23
        let result = p * unsafeBitCast(bits, to: SIMD8<Float>.self)
        return result.replacing(with: x, where: x .!= x)
    }

    /// `1 / (1 + e⁻ˣ)`.
    @inline(__always)
    public static func sigmoid(_ x: Float) -> Float { 1 / (1 + exp(-x)) }

    /// Eight floats from `p` (any alignment): the one spelling of the kernels' lane loads.
    @inline(__always)
    static func load8(_ p: UnsafePointer<Float>) -> SIMD8<Float> { UnsafeRawPointer(p).loadUnaligned(as: SIMD8<Float>.self) }

    /// Stores eight floats at `p` (any alignment).
    @inline(__always)
    static func store8(_ v: SIMD8<Float>, _ p: UnsafeMutablePointer<Float>) { UnsafeMutableRawPointer(p).storeBytes(of: v, as: SIMD8<Float>.self) }

    /// ``sigmoid(_:)-(Float)`` on eight lanes: bitwise the scalar's result on each lane.
    @inline(__always)
    public static func sigmoid(_ x: SIMD8<Float>) -> SIMD8<Float> { 1 / (1 + exp(-x)) }

    /// Writes `exp(x[i] − shift)` into `x` and returns their sum, accumulated in Double.
    ///
    /// The sum is a softmax denominator: 49 152 terms for SmolLM2's vocabulary. Eight Float lanes of
    /// 6 144 terms each drift by ~1e-6 relative (random-walk rounding), which moved the loss 3.5e-6 and
    /// the gradient norm 7e-6 from torch's (whose sums are cascaded); eight Double lanes keep the loop
    /// vectorisable and the sum exact to Float's rounding of the terms.
    @inline(__always)
    public static func exponentiate(_ x: UnsafeMutablePointer<Float>, count: Int, shift: Float) -> Float {
        var sums = SIMD8<Double>(repeating: 0)
        let shifts = SIMD8<Float>(repeating: shift)
        var i = 0
        while i + 8 <= count {
            let e = exp(load8(x + i) - shifts)
            store8(e, x + i)
            sums += widen(e)
            i += 8
        }
        var sum = sums.sum()
        while i < count {
            let e = exp(x[i] - shift)
            x[i] = e
            sum += Double(e)
            i += 1
        }
        return Float(sum)
    }

    /// `SIMD8<Double>(x)`, lane by lane: the generic conversion initialiser was left as a call per
    /// eight lanes inside `exponentiate`; this form compiles to two `cvtps2pd`.
    @inline(__always)
    static func widen(_ x: SIMD8<Float>) -> SIMD8<Double> {
        SIMD8<Double>(Double(x[0]), Double(x[1]), Double(x[2]), Double(x[3]),
                      Double(x[4]), Double(x[5]), Double(x[6]), Double(x[7]))
    }

    /// `Σ xᵢ²` in Double: eight Double lanes (vectorisable), each summing every eighth square, so the
    /// result is exact to Double rounding whatever the count — a Float running sum over a 28M-element
    /// embedding drifts in the third digit, and differently for each way the buffer is split.
    public static func sumOfSquares(_ x: UnsafeBufferPointer<Float>) -> Double {
        guard let base = x.baseAddress else { return 0 }
        let count = x.count
        var lanes = SIMD8<Double>(repeating: 0)
        var i = 0
        while i + 8 <= count {
            let values = SIMD8<Double>(load8(base + i))
            lanes += values * values
            i += 8
        }
        var sum = lanes.sum()
        while i < count {
            sum += Double(base[i]) * Double(base[i])
            i += 1
        }
        return sum
    }

    /// `Σ a[i]·b[i]` over `count` elements in eight Float lanes (lane `l` sums every eighth product
    /// from `l`; then `SIMD8.sum()`, a fixed order of its own, and the tail last): attention's
    /// `rowsum(dO ⊙ O)` over a head's `d` channels, which as one scalar chain waited on each add's
    /// latency. The same inputs give the same bits on every call and thread.
    @inline(__always)
    public static func dot(_ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, count: Int) -> Float {
        var lanes = SIMD8<Float>(repeating: 0)
        var i = 0
        while i + 8 <= count {
            lanes += load8(a + i) * load8(b + i)
            i += 8
        }
        var sum = lanes.sum()
        while i < count { sum += a[i] * b[i]; i += 1 }
        return sum
    }

    /// The largest of `count` elements.
    @inline(__always)
    public static func maximum(_ x: UnsafePointer<Float>, count: Int) -> Float {
        var lanes = SIMD8<Float>(repeating: -.infinity)
        var i = 0
        while i + 8 <= count {
            // Lane-wise `if x > lane { lane = x }` (a NaN never replaces), without the per-lane branches.
            let values = load8(x + i)
            lanes.replace(with: values, where: lanes .< values)
            i += 8
        }
        var m = lanes.max()
        while i < count { m = Swift.max(m, x[i]); i += 1 }
        return m
    }

    /// `x[i] *= factor` for `count` elements.
    @inline(__always)
    public static func scale(_ x: UnsafeMutablePointer<Float>, count: Int, by factor: Float) {
        for i in 0..<count { x[i] *= factor }
    }
}
