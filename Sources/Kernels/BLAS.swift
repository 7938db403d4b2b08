internal import COpenBLAS
#if canImport(Glibc)
import Glibc
#endif

/// Row-major dense matrix products: the only place in zero-sft that calls BLAS.
///
/// Every matmul in the trainer goes through ``BLAS/gemm(transposeA:transposeB:m:n:k:alpha:a:lda:b:ldb:beta:c:ldc:)``,
/// which calls the library chosen with ``BLAS/select(_:)``: OpenBLAS (linked, the default), or BLIS or
/// oneDNN, opened at run time (`dlopen` with `RTLD_LOCAL`, so their BLAS symbols never replace
/// OpenBLAS's). ``BLAS/gemv(m:n:alpha:a:lda:x:beta:y:)`` always uses OpenBLAS.
public enum BLAS {
    /// A BLAS library zero-sft can send its gemm calls to.
    public enum Library: String, CaseIterable, Sendable, CustomStringConvertible {
        /// OpenBLAS (`libopenblas`, linked): always available, the default.
        case openblas
        /// BLIS (`libblis.so.4`, Debian's `libblis-dev`), through its typed API `bli_sgemm`.
        case blis
        /// oneDNN (`libdnnl.so.2`, Debian's `libdnnl-dev`), through `dnnl_sgemm` (row-major).
        case onednn

        public var description: String { rawValue }

        /// The shared objects tried, in order, by `dlopen`.
        var sharedObjects: [String] {
            switch self {
            case .openblas: []
            case .blis: ["libblis.so.4", "libblis.so"]
            case .onednn: ["libdnnl.so.2", "libdnnl.so.3", "libdnnl.so"]
            }
        }

        /// The package that installs it on Debian/Ubuntu.
        var package: String {
            switch self {
            case .openblas: "libopenblas-dev"
            case .blis: "libblis-dev"
            case .onednn: "libdnnl-dev"
            }
        }
    }

    /// A library asked for with `--blas` (or `ZERO_SFT_BLAS`) that cannot be used on this host.
    public struct LibraryError: Error, CustomStringConvertible, Sendable {
        public var library: Library
        /// The shared objects tried and what `dlopen`/`dlsym` said about each.
        public var reasons: [String]

        public var description: String {
            "BLAS library \(library) is not usable on this host (install \(library.package), or choose --blas openblas): "
                + reasons.joined(separator: "; ")
        }
    }

    /// One opened library's gemm and thread-count entry points.
    ///
    /// The C functions are found once with `dlsym`; a `Backend` value is cheap to copy and safe to
    /// share (the libraries are never closed).
    public struct Backend: @unchecked Sendable {
        public let library: Library
        /// What the library says about itself: its version and the kernel set it picked for this CPU.
        public let details: String
        private let entry: Entry

        private enum Entry {
            case openblas
            case blis(gemm: BLISGemm, setThreads: BLISSetThreads)
            case onednn(gemm: DNNLGemm, setThreads: OMPSetThreads?)
        }

        /// `void bli_sgemm(trans_t, trans_t, dim_t m, n, k, float* alpha, float* a, inc_t rs, cs, float* b, inc_t rs, cs,
        /// float* beta, float* c, inc_t rs, cs)`; `trans_t` is an `int` enum (`BLIS_TRANSPOSE` = 8), `dim_t`/`inc_t` 64-bit.
        typealias BLISGemm = @convention(c) (
            Int32, Int32, Int64, Int64, Int64, UnsafeMutablePointer<Float>?,
            UnsafeMutablePointer<Float>?, Int64, Int64, UnsafeMutablePointer<Float>?, Int64, Int64,
            UnsafeMutablePointer<Float>?, UnsafeMutablePointer<Float>?, Int64, Int64) -> Void
        typealias BLISSetThreads = @convention(c) (Int64) -> Void
        /// `dnnl_status_t dnnl_sgemm(char transa, char transb, dnnl_dim_t M, N, K, float alpha, const float* A,
        /// dnnl_dim_t lda, const float* B, ldb, float beta, float* C, ldc)`, row-major.
        typealias DNNLGemm = @convention(c) (
            CChar, CChar, Int64, Int64, Int64, Float, UnsafePointer<Float>?, Int64,
            UnsafePointer<Float>?, Int64, Float, UnsafeMutablePointer<Float>?, Int64) -> Int32
        typealias OMPSetThreads = @convention(c) (Int32) -> Void

        private init(library: Library, details: String, entry: Entry) {
            self.library = library
            self.details = details
            self.entry = entry
        }

        /// OpenBLAS, linked into the binary.
        public static let openblas = Backend(library: .openblas, details: "OpenBLAS core \(BLAS.openBLASCore)", entry: .openblas)

        /// Opens `library` with `dlopen(RTLD_NOW | RTLD_LOCAL)` and finds its entry points.
        ///
        /// - Throws: ``LibraryError`` naming the shared objects tried and the loader's message.
        public static func load(_ library: Library) throws -> Backend {
            try load(library, from: library.sharedObjects)
        }

        /// ``load(_:)`` from the given shared objects (tests name a missing one).
        static func load(_ library: Library, from sharedObjects: [String]) throws -> Backend {
            if library == .openblas { return .openblas }
            // BLIS and oneDNN run their threads with OpenMP (libgomp). Its default, threads spinning
            // between calls, starves the rank's other threads (OpenBLAS's, Parallel's) and collapses
            // under contention: 0.1 against 26–38 GFLOP/s passive on attention blocks at 2 threads on
            // a loaded Zen 4. libgomp reads the policy when it loads; a value the user set is kept.
            setenv("OMP_WAIT_POLICY", "passive", 0)
            var reasons: [String] = []
            for name in sharedObjects {
                guard let handle = dlopen(name, RTLD_NOW | RTLD_LOCAL) else {
                    reasons.append(loaderMessage())  // names the file
                    continue
                }
                func symbol<T>(_ symbolName: String, as type: T.Type) -> T? {
                    _ = dlerror()
                    guard let address = dlsym(handle, symbolName) else {
                        reasons.append("\(name): no symbol \(symbolName) (\(loaderMessage()))")
                        return nil
                    }
                    return unsafeBitCast(address, to: type)
                }
                switch library {
                case .openblas:
                    return .openblas
                case .blis:
                    guard let gemm = symbol("bli_sgemm", as: BLISGemm.self),
                          let setThreads = symbol("bli_thread_set_num_threads", as: BLISSetThreads.self) else { continue }
                    var details = "BLIS (\(name))"
                    typealias ArchID = @convention(c) () -> Int32
                    typealias ArchString = @convention(c) (Int32) -> UnsafePointer<CChar>?
                    if let query = symbol("bli_arch_query_id", as: ArchID.self), let string = symbol("bli_arch_string", as: ArchString.self),
                       let arch = string(query()) {
                        details += " kernels \(String(cString: arch))"
                    }
                    return Backend(library: .blis, details: details, entry: .blis(gemm: gemm, setThreads: setThreads))
                case .onednn:
                    guard let gemm = symbol("dnnl_sgemm", as: DNNLGemm.self) else { continue }
                    // libgomp is one of libdnnl's dependencies, so dlsym through its handle finds it.
                    let setThreads = symbol("omp_set_num_threads", as: OMPSetThreads.self)
                    var details = "oneDNN (\(name))"
                    typealias Version = @convention(c) () -> UnsafePointer<Int32>?
                    if let version = symbol("dnnl_version", as: Version.self), let v = version() {
                        details = "oneDNN \(v[0]).\(v[1]).\(v[2]) (\(name))"
                    }
                    return Backend(library: .onednn, details: details, entry: .onednn(gemm: gemm, setThreads: setThreads))
                }
            }
            throw LibraryError(library: library, reasons: reasons)
        }

        private static func loaderMessage() -> String {
            dlerror().map { String(cString: $0) } ?? "unknown loader error"
        }

        /// Sets the threads this library uses for one gemm call (BLIS: `bli_thread_set_num_threads`;
        /// oneDNN: `omp_set_num_threads` of its OpenMP runtime; OpenBLAS: `openblas_set_num_threads`).
        public func setThreads(_ count: Int) {
            let n = max(1, count)
            switch entry {
            case .openblas: zsft_blas_set_threads(Int32(n))
            case .blis(_, let set): set(Int64(n))
            case .onednn(_, let set): set?(Int32(n))
            }
        }

        /// `C = alpha * op(A) * op(B) + beta * C`, row-major, as ``BLAS/gemm(transposeA:transposeB:m:n:k:alpha:a:lda:b:ldb:beta:c:ldc:)``
        /// but always with this library.
        public func gemm(
            transposeA: Bool, transposeB: Bool,
            m: Int, n: Int, k: Int,
            alpha: Float = 1,
            a: UnsafePointer<Float>, lda: Int,
            b: UnsafePointer<Float>, ldb: Int,
            beta: Float = 0,
            c: UnsafeMutablePointer<Float>, ldc: Int
        ) {
            if m == 0 || n == 0 { return }
            switch entry {
            case .openblas:
                precondition(m <= Int(Int32.max) && n <= Int(Int32.max) && k <= Int(Int32.max),
                             "gemm: dimensions \(m)×\(n)×\(k) exceed Int32")
                cblas_sgemm(
                    CblasRowMajor,
                    transposeA ? CblasTrans : CblasNoTrans,
                    transposeB ? CblasTrans : CblasNoTrans,
                    Int32(m), Int32(n), Int32(k), alpha,
                    a, Int32(lda), b, Int32(ldb), beta, c, Int32(ldc))
            case .blis(let gemm, _):
                // The typed API takes row and column strides of the matrices as stored: row-major is (ld, 1).
                var alpha = alpha, beta = beta
                gemm(transposeA ? 8 : 0, transposeB ? 8 : 0, Int64(m), Int64(n), Int64(k), &alpha,
                     UnsafeMutablePointer(mutating: a), Int64(lda), 1, UnsafeMutablePointer(mutating: b), Int64(ldb), 1,
                     &beta, c, Int64(ldc), 1)
            case .onednn(let gemm, _):
                let status = gemm(transposeA ? 84 : 78, transposeB ? 84 : 78, Int64(m), Int64(n), Int64(k), alpha,
                                  a, Int64(lda), b, Int64(ldb), beta, c, Int64(ldc))  // 'T' = 84, 'N' = 78
                precondition(status == 0, "dnnl_sgemm failed with status \(status) for \(m)×\(n)×\(k) (lda \(lda), ldb \(ldb), ldc \(ldc))")
            }
        }
    }

    /// The library gemm calls go to. Written only by ``select(_:)``, once per process before any
    /// work starts (the command line's `--blas`); read on every gemm call.
    nonisolated(unsafe) private static var active: Backend = .openblas

    /// The library ``gemm(transposeA:transposeB:m:n:k:alpha:a:lda:b:ldb:beta:c:ldc:)`` calls.
    public static var library: Library { active.library }

    /// The active library's version and kernel set, e.g. `OpenBLAS core Cooperlake`.
    public static var libraryDetails: String { active.details }

    /// Makes gemm calls from the calling thread single-threaded, for kernels that call gemm from
    /// several threads at once (inside ``Parallel/withSingleThreadedBLAS(_:)``). OpenBLAS's and BLIS's
    /// thread counts are process-wide and already 1 there; oneDNN's OpenMP count is per calling thread
    /// (libgomp's `nthreads-var` ICV), so a worker thread would otherwise start a team of the default
    /// size from every call and oversubscribe the cores.
    /// The corresponding C function is `omp_set_num_threads` (oneDNN only).
    public static func useOneThreadOnCallingThread() {
        if active.library == .onednn { active.setThreads(1) }
    }

    /// Sends every later gemm call to `library`, with OpenBLAS's thread count (``threadCount``).
    ///
    /// Call once at start-up, before any thread runs a gemm.
    /// - Throws: ``LibraryError`` when the library is not installed or lacks an entry point.
    public static func select(_ library: Library) throws {
        let backend = try Backend.load(library)
        backend.setThreads(threadCount)
        active = backend
    }

    /// `C = alpha * op(A) * op(B) + beta * C`, all row-major, with the library chosen by ``select(_:)``.
    ///
    /// `op(A)` is `m × k`, `op(B)` is `k × n`, `C` is `m × n`. `lda`, `ldb`, `ldc` are the row strides
    /// of the matrices as stored (before the transpose), in elements.
    /// The corresponding C functions are `cblas_sgemm`, `bli_sgemm` and `dnnl_sgemm`.
    @inline(__always)
    public static func gemm(
        transposeA: Bool, transposeB: Bool,
        m: Int, n: Int, k: Int,
        alpha: Float = 1,
        a: UnsafePointer<Float>, lda: Int,
        b: UnsafePointer<Float>, ldb: Int,
        beta: Float = 0,
        c: UnsafeMutablePointer<Float>, ldc: Int
    ) {
        active.gemm(transposeA: transposeA, transposeB: transposeB, m: m, n: n, k: k, alpha: alpha,
                    a: a, lda: lda, b: b, ldb: ldb, beta: beta, c: c, ldc: ldc)
    }

    /// `y = alpha · A · x + beta · y` with `A` an `m × n` row-major matrix (row stride `lda`), `x` of
    /// `n` and `y` of `m` elements (unit strides). Always OpenBLAS, whatever ``library`` is.
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

    /// The number of threads one gemm call uses: OpenBLAS's (from `OPENBLAS_NUM_THREADS`), which the
    /// selected library follows. Setting it sets OpenBLAS's and the selected library's.
    /// The corresponding C function is `openblas_get_num_threads`.
    public static var threadCount: Int {
        get { Int(zsft_blas_threads()) }
        set {
            zsft_blas_set_threads(Int32(max(1, newValue)))
            if active.library != .openblas { active.setThreads(newValue) }
        }
    }

    /// The kernel set OpenBLAS picked for this CPU (or `OPENBLAS_CORETYPE`), e.g. `Cooperlake`.
    /// The corresponding C function is `openblas_get_corename`.
    public static var openBLASCore: String {
        zsft_blas_corename().map { String(cString: $0) } ?? "unknown"
    }
}
