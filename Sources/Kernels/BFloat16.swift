#if canImport(Glibc)
import Glibc
#endif
import Synchronization

/// bfloat16: fp32's sign, 8-bit exponent and top 7 mantissa bits (Kalamkar et al., "A Study of
/// BFLOAT16 for Deep Learning Training", 2019), the operand type of ``BLAS/Precision/bf16`` gemms.
///
/// Values are kept as their 16-bit patterns (`UInt16`); a bf16 value is exactly the fp32 value whose
/// upper half is the pattern and lower half zero.
public enum BFloat16 {
    /// The bf16 pattern nearest to `x`, ties to even; values above the largest bf16 (≈ 3.39e38) round
    /// to infinity, and every NaN becomes `0xFFFF` (a NaN): what PyTorch's `tensor.to(torch.bfloat16)`
    /// gives on CPU (ATen's vectorised `cvtfp32_bf16`; its scalar `c10::BFloat16` gives `0x7FC0`).
    @inline(__always)
    public static func round(_ x: Float) -> UInt16 { UInt16(truncatingIfNeeded: roundedBits(x.bitPattern) &>> 16) }

    /// The fp32 bit pattern of `bits` rounded to bf16 (ties to even; NaN → `0xFFFF_0000`), low half
    /// zero: the one rule behind every rounding here, written so that LLVM vectorises the loops that
    /// call it (compare, select, add, mask).
    @inline(__always)
    static func roundedBits(_ u: UInt32) -> UInt32 {
        (u & 0x7FFF_FFFF) > 0x7F80_0000 ? 0xFFFF_0000 : (u &+ 0x7FFF &+ ((u &>> 16) & 1)) & 0xFFFF_0000
    }

    /// The fp32 value of a bf16 pattern (exact).
    @inline(__always)
    public static func float(_ pattern: UInt16) -> Float { Float(bitPattern: UInt32(pattern) << 16) }

    /// Rounds the `rows × columns` fp32 matrix at `source` (row stride `ld` elements) to bf16, densely
    /// (row stride `columns`) at `destination`; rows split over the rank's threads when large
    /// (``Parallel/forEach(count:grain:_:)``, which runs inline inside single-threaded kernels).
    public static func round(_ source: UnsafePointer<Float>, rows: Int, columns: Int, ld: Int,
                             into destination: UnsafeMutablePointer<UInt16>) {
        round((source, rows: rows, columns: columns, ld: ld, into: destination),
              (source, rows: 0, columns: 0, ld: 0, into: destination))
    }

    /// Rounds a vector: `destination[i] = round(source[i])` (ties to even, NaN → `0xFFFF`), split over
    /// the rank's threads in runs of 64 Ki elements. `destination.count == source.count`.
    ///
    /// `--param-dtype bf16`: what a rank puts on the wire of a stage-3 all-gather (FSDP's
    /// `MixedPrecisionPolicy(param_dtype=torch.bfloat16)` casts the shard the same way).
    public static func round(_ source: UnsafeBufferPointer<Float>, into destination: UnsafeMutableBufferPointer<UInt16>) {
        precondition(source.count == destination.count, "BFloat16.round: \(source.count) values into \(destination.count)")
        guard let input = source.baseAddress, let output = destination.baseAddress else { return }
        Parallel.forEach(count: source.count, grain: 1 << 16) { range in
            roundRow(input + range.lowerBound, output + range.lowerBound, count: range.count)
        }
    }

    /// Widens bf16 patterns to fp32 (exact): `destination[i] = float(source[i])`, split over the
    /// rank's threads. `destination.count == source.count`.
    public static func widen(_ source: UnsafeBufferPointer<UInt16>, into destination: UnsafeMutableBufferPointer<Float>) {
        precondition(source.count == destination.count, "BFloat16.widen: \(source.count) values into \(destination.count)")
        guard let input = source.baseAddress, let output = destination.baseAddress else { return }
        Parallel.forEach(count: source.count, grain: 1 << 16) { range in
            UnsafeMutableRawPointer(output + range.lowerBound).withMemoryRebound(to: UInt32.self, capacity: range.count) { bits in
                let from = input + range.lowerBound
                for i in 0..<range.count { bits[i] = UInt32(from[i]) &<< 16 }
            }
        }
    }

    /// fp32 values rounded to the nearest bf16 and kept in fp32: `destination[i] = float(round(source[i]))`,
    /// split over the rank's threads. `destination.count == source.count`; the two may be the same buffer.
    ///
    /// `--param-dtype bf16` at stages 0–2, where a rank holds the whole fp32 parameters and the model
    /// reads a rounded copy (no wire to cast for).
    public static func roundKeepingFloat(_ source: UnsafeBufferPointer<Float>, into destination: UnsafeMutableBufferPointer<Float>) {
        precondition(source.count == destination.count, "BFloat16.roundKeepingFloat: \(source.count) values into \(destination.count)")
        guard let input = source.baseAddress, let output = destination.baseAddress else { return }
        Parallel.forEach(count: source.count, grain: 1 << 16) { range in
            UnsafeRawPointer(input + range.lowerBound).withMemoryRebound(to: UInt32.self, capacity: range.count) { from in
                UnsafeMutableRawPointer(output + range.lowerBound).withMemoryRebound(to: UInt32.self, capacity: range.count) { to in
                    for i in 0..<range.count { to[i] = roundedBits(from[i]) }
                }
            }
        }
    }

    /// A matrix to round: `rows × columns` fp32 at row stride `ld`, into dense bf16 at `into`.
    typealias Matrix = (source: UnsafePointer<Float>, rows: Int, columns: Int, ld: Int, into: UnsafeMutablePointer<UInt16>)

    /// Rounds two matrices (a gemm's `A` and `B`) in one split over the rank's threads: one fork and
    /// join per gemm instead of two (each costs a wake-up of the workers, much more on a loaded host).
    static func round(_ first: Matrix, _ second: Matrix) {
        precondition(first.ld >= first.columns && second.ld >= second.columns, "BFloat16.round: a row stride below its columns")
        let elements = first.rows * first.columns + second.rows * second.columns
        guard elements > 0 else { return }
        // Each part takes the same share of both matrices' rows: balanced however different they are.
        let parts = max(1, min(Parallel.threadCount, elements >> 16))
        Parallel.forEach(count: parts) { range in
            for part in range {
                for m in [first, second] where m.columns > 0 {
                    for r in (m.rows * part / parts)..<(m.rows * (part + 1) / parts) {
                        roundRow(m.source + r * m.ld, m.into + r * m.columns, count: m.columns)
                    }
                }
            }
        }
    }

    /// One row: a plain loop over the bit patterns, which LLVM vectorises (compare, select, shift);
    /// Swift's generic SIMD operations (`replace(with:where:)`, the narrowing initialiser) did not
    /// compile to vector code and took 46% of a bf16 step.
    @inline(__always)
    private static func roundRow(_ source: UnsafePointer<Float>, _ destination: UnsafeMutablePointer<UInt16>, count: Int) {
        UnsafeRawPointer(source).withMemoryRebound(to: UInt32.self, capacity: count) { bits in
            for i in 0..<count { destination[i] = UInt16(truncatingIfNeeded: roundedBits(bits[i]) &>> 16) }
        }
    }
}

/// oneDNN's bf16 gemm, `dnnl_gemm_bf16bf16f32`: `C = alpha · op(A) · op(B) + beta · C` with bf16
/// `A` and `B`, products exact in fp32 and summed in fp32, `C` fp32, row-major (as `dnnl_sgemm`).
///
/// ``BLAS/gemm(transposeA:transposeB:m:n:k:alpha:a:lda:b:ldb:beta:c:ldc:)`` sends every product here
/// under ``BLAS/Precision/bf16``, rounding both fp32 operands to bf16 first (``BFloat16/round(_:)``)
/// into scratch the calling thread keeps for its next calls: it grows to the largest `A` and `B` the
/// thread has rounded and is freed when the thread exits (``BLAS/bf16ScratchBytes``). This is
/// PyTorch's `torch.autocast(dtype=torch.bfloat16)` for matmuls, except that the output stays fp32.
public struct BF16Gemm: @unchecked Sendable {
    /// `dnnl_status_t dnnl_gemm_bf16bf16f32(char transa, char transb, dnnl_dim_t M, N, K, float alpha,
    /// const bfloat16_t* A, dnnl_dim_t lda, const bfloat16_t* B, ldb, float beta, float* C, ldc)`.
    typealias Function = @convention(c) (
        CChar, CChar, Int64, Int64, Int64, Float, UnsafePointer<UInt16>?, Int64,
        UnsafePointer<UInt16>?, Int64, Float, UnsafeMutablePointer<Float>?, Int64) -> Int32
    typealias OMPSetThreads = @convention(c) (Int32) -> Void

    let function: Function
    let setThreadsFunction: OMPSetThreads?
    /// The library's name and version, e.g. `oneDNN 2.6.3 (libdnnl.so.2)`.
    public let details: String

    /// Sets the OpenMP threads of the calling thread's later calls (`omp_set_num_threads`).
    public func setThreads(_ count: Int) { setThreadsFunction?(Int32(max(1, count))) }

    /// One product on bf16 operands already rounded: dense, row strides `lda`, `ldb`, `ldc`.
    /// - Returns: oneDNN's status (0 = `dnnl_success`, 3 = `dnnl_unimplemented` on a CPU without AVX-512).
    func callAsFunction(transposeA: Bool, transposeB: Bool, m: Int, n: Int, k: Int, alpha: Float,
                        a: UnsafePointer<UInt16>, lda: Int, b: UnsafePointer<UInt16>, ldb: Int,
                        beta: Float, c: UnsafeMutablePointer<Float>, ldc: Int) -> Int32 {
        // With the stop signals deferred: oneDNN's JIT kernels move `rsp` into the heap (``SignalDeferral``).
        SignalDeferral.during {
            function(transposeA ? 84 : 78, transposeB ? 84 : 78, Int64(m), Int64(n), Int64(k), alpha,
                     a, Int64(lda), b, Int64(ldb), beta, c, Int64(ldc))  // 'T' = 84, 'N' = 78
        }
    }

    /// `C = alpha · op(A) · op(B) + beta · C` on fp32 operands: rounds `A` (stored `m × k`, or `k × m`
    /// transposed, row stride `lda`) and `B` (`k × n`, or `n × k`) into the calling thread's scratch.
    public func gemm(transposeA: Bool, transposeB: Bool, m: Int, n: Int, k: Int, alpha: Float,
              a: UnsafePointer<Float>, lda: Int, b: UnsafePointer<Float>, ldb: Int,
              beta: Float, c: UnsafeMutablePointer<Float>, ldc: Int) {
        if m == 0 || n == 0 { return }
        if k == 0 {   // C = beta · C, as BLAS defines it for an empty sum
            for row in 0..<m {
                let r = c + row * ldc
                for j in 0..<n { r[j] = beta == 0 ? 0 : beta * r[j] }
            }
            return
        }
        let (aRows, aColumns) = transposeA ? (k, m) : (m, k)
        let (bRows, bColumns) = transposeB ? (n, k) : (k, n)
        let scratch = BF16Scratch.current()
        let a16 = scratch.a(aRows * aColumns), b16 = scratch.b(bRows * bColumns)
        BFloat16.round((a, rows: aRows, columns: aColumns, ld: lda, into: a16), (b, rows: bRows, columns: bColumns, ld: ldb, into: b16))
        let status = self(transposeA: transposeA, transposeB: transposeB, m: m, n: n, k: k, alpha: alpha,
                          a: a16, lda: aColumns, b: b16, ldb: bColumns, beta: beta, c: c, ldc: ldc)
        precondition(status == 0, "dnnl_gemm_bf16bf16f32 failed with status \(status) for \(m)×\(n)×\(k)")
    }
}

/// A thread's bf16 operand buffers (``BF16Gemm/gemm(transposeA:transposeB:m:n:k:alpha:a:lda:b:ldb:beta:c:ldc:)``),
/// kept in a `pthread` key so each thread that runs gemms (the rank's main thread, attention's
/// workers) rounds into its own; freed by the key's destructor when the thread exits.
final class BF16Scratch {
    private var aBuffer: UnsafeMutablePointer<UInt16>?, aCapacity = 0
    private var bBuffer: UnsafeMutablePointer<UInt16>?, bCapacity = 0

    /// Bytes held by every thread's scratch together.
    static let bytes = Atomic<Int>(0)

    func a(_ count: Int) -> UnsafeMutablePointer<UInt16> { Self.grow(&aBuffer, &aCapacity, count) }
    func b(_ count: Int) -> UnsafeMutablePointer<UInt16> { Self.grow(&bBuffer, &bCapacity, count) }

    private static func grow(_ buffer: inout UnsafeMutablePointer<UInt16>?, _ capacity: inout Int, _ count: Int) -> UnsafeMutablePointer<UInt16> {
        if let buffer, count <= capacity { return buffer }
        buffer?.deallocate()
        bytes.add(2 * (count - capacity), ordering: .relaxed)
        capacity = count
        let fresh = UnsafeMutablePointer<UInt16>.allocate(capacity: count)
        buffer = fresh
        return fresh
    }

    deinit {
        aBuffer?.deallocate(); bBuffer?.deallocate()
        Self.bytes.subtract(2 * (aCapacity + bCapacity), ordering: .relaxed)
    }

    private static let key: pthread_key_t = {
        var key = pthread_key_t()
        let status = pthread_key_create(&key) { pointer in
            guard let pointer else { return }
            Unmanaged<BF16Scratch>.fromOpaque(pointer).release()
        }
        precondition(status == 0, "pthread_key_create failed (\(status))")
        return key
    }()

    /// The calling thread's scratch, made on first use.
    static func current() -> BF16Scratch {
        if let pointer = pthread_getspecific(key) {
            return Unmanaged<BF16Scratch>.fromOpaque(pointer).takeUnretainedValue()
        }
        let scratch = BF16Scratch()
        pthread_setspecific(key, Unmanaged.passRetained(scratch).toOpaque())
        return scratch
    }
}
