internal import COpenBLAS

/// Row-major dense matrix products through OpenBLAS: the only place in zero-sft that calls BLAS.
///
/// Every matmul in the trainer goes through ``BLAS/gemm(transposeA:transposeB:m:n:k:alpha:a:lda:b:ldb:beta:c:ldc:)``.
public enum BLAS {
    /// `C = alpha * op(A) * op(B) + beta * C`, all row-major.
    ///
    /// `op(A)` is `m × k`, `op(B)` is `k × n`, `C` is `m × n`. `lda`, `ldb`, `ldc` are the row strides
    /// of the matrices as stored (before the transpose), in elements.
    /// The corresponding C function is `cblas_sgemm`.
    public static func gemm(
        transposeA: Bool, transposeB: Bool,
        m: Int, n: Int, k: Int,
        alpha: Float = 1,
        a: UnsafePointer<Float>, lda: Int,
        b: UnsafePointer<Float>, ldb: Int,
        beta: Float = 0,
        c: UnsafeMutablePointer<Float>, ldc: Int
    ) {
        if m == 0 || n == 0 { return }
        precondition(m <= Int(Int32.max) && n <= Int(Int32.max) && k <= Int(Int32.max),
                     "gemm: dimensions \(m)×\(n)×\(k) exceed Int32")
        rawGemm(transposeA, transposeB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)
    }

    private static func rawGemm(
        _ transposeA: Bool, _ transposeB: Bool, _ m: Int, _ n: Int, _ k: Int, _ alpha: Float,
        _ a: UnsafePointer<Float>, _ lda: Int, _ b: UnsafePointer<Float>, _ ldb: Int,
        _ beta: Float, _ c: UnsafeMutablePointer<Float>, _ ldc: Int
    ) {
        cblas_sgemm(
            CblasRowMajor,
            transposeA ? CblasTrans : CblasNoTrans,
            transposeB ? CblasTrans : CblasNoTrans,
            Int32(m), Int32(n), Int32(k), alpha,
            a, Int32(lda), b, Int32(ldb), beta, c, Int32(ldc))
    }

    /// `y = alpha · A · x + beta · y` with `A` an `m × n` row-major matrix (row stride `lda`), `x` of
    /// `n` and `y` of `m` elements (unit strides).
    ///
    /// For one row of activations this is what `gemm` with `m = 1` computes, without `gemm`'s packing
    /// copy of the whole weight matrix: decoding one token with SmolLM2-135M spent 73% of its time in
    /// `sgemm_incopy`/`sgemm_kernel` for m = 1 products.
    /// The corresponding C function is `cblas_sgemv`.
    public static func gemv(
        m: Int, n: Int, alpha: Float = 1,
        a: UnsafePointer<Float>, lda: Int,
        x: UnsafePointer<Float>, beta: Float = 0,
        y: UnsafeMutablePointer<Float>
    ) {
        if m == 0 { return }
        precondition(m <= Int(Int32.max) && n <= Int(Int32.max) && lda <= Int(Int32.max), "gemv: dimensions \(m)×\(n) exceed Int32")
        cblas_sgemv(CblasRowMajor, CblasNoTrans, Int32(m), Int32(n), alpha, a, Int32(lda), x, 1, beta, y, 1)
    }

    /// The number of threads OpenBLAS uses for one call.
    /// The corresponding C function is `openblas_get_num_threads`.
    public static var threadCount: Int {
        get { Int(zsft_blas_threads()) }
        set { zsft_blas_set_threads(Int32(max(1, newValue))) }
    }
}
