internal import COpenBLAS
internal import CPUFeatures
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
                    return Backend(library: .onednn, details: BLAS.oneDNNDescription(handle, name),
                                   entry: .onednn(gemm: gemm, setThreads: setThreads))
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
                // Both dlopened libraries run with the stop signals deferred (``SignalDeferral``: oneDNN's
                // JIT kernels move `rsp` into the heap; BLIS's assembly kernels are not vouched for either).
                var alpha = alpha, beta = beta
                SignalDeferral.during {
                    gemm(transposeA ? 8 : 0, transposeB ? 8 : 0, Int64(m), Int64(n), Int64(k), &alpha,
                         UnsafeMutablePointer(mutating: a), Int64(lda), 1, UnsafeMutablePointer(mutating: b), Int64(ldb), 1,
                         &beta, c, Int64(ldc), 1)
                }
            case .onednn(let gemm, _):
                let status = SignalDeferral.during {
                    gemm(transposeA ? 84 : 78, transposeB ? 84 : 78, Int64(m), Int64(n), Int64(k), alpha,
                         a, Int64(lda), b, Int64(ldb), beta, c, Int64(ldc))  // 'T' = 84, 'N' = 78
                }
                precondition(status == 0, "dnnl_sgemm failed with status \(status) for \(m)×\(n)×\(k) (lda \(lda), ldb \(ldb), ldc \(ldc))")
            }
        }
    }

    /// The library gemm calls go to. Written only by ``select(_:)``, once per process before any
    /// work starts (the command line's `--blas`); read on every gemm call.
    nonisolated(unsafe) private static var active: Backend = .openblas

    /// The bf16 gemm every product goes to under ``Precision/bf16``; nil under fp32. Written only by
    /// ``select(precision:)``, once per process before any work starts (`--precision`).
    nonisolated(unsafe) private static var bf16: BF16Gemm?

    /// The arithmetic of every gemm: the operand type, the accumulation and output are fp32 either way.
    public enum Precision: String, CaseIterable, Sendable, CustomStringConvertible {
        /// fp32 operands: the selected library's sgemm (the default).
        case fp32
        /// Both operands rounded to bf16 (ties to even, as PyTorch), products summed in fp32 into an fp32
        /// output, by oneDNN's `dnnl_gemm_bf16bf16f32`: PyTorch's `autocast(dtype=torch.bfloat16)` for
        /// matmuls, with fp32 master weights, gradients and optimizer states. Needs AVX-512 with
        /// `avx512_bf16` (Zen 4, Cooper Lake, Sapphire Rapids and later) and oneDNN (`libdnnl-dev`).
        case bf16

        public var description: String { rawValue }
    }

    /// `--precision bf16` on a host that cannot run it fast: no oneDNN, or a CPU without `avx512_bf16`
    /// (oneDNN would refuse or emulate it slower than fp32).
    public struct PrecisionError: Error, CustomStringConvertible, Sendable {
        public var precision: Precision
        public var reason: String
        public var description: String { "--precision \(precision) is not available on this host: \(reason); use --precision fp32" }
    }

    /// The precision chosen with ``select(precision:)`` (fp32 until then).
    public static var precision: Precision { bf16 == nil ? .fp32 : .bf16 }

    /// Bytes the bf16 operand scratch of every thread holds (0 under fp32): each thread that runs a
    /// gemm keeps room for the largest `A` and `B` it has rounded.
    public static var bf16ScratchBytes: Int { BF16Scratch.bytes.load(ordering: .relaxed) }

    /// Whether `/proc/cpuinfo`'s flags name `avx512_bf16` (nil when the file cannot be read).
    public static func cpuHasAVX512BF16(cpuinfo: String? = nil) -> Bool? {
        cpuFlags(cpuinfo: cpuinfo).map { $0.contains("avx512_bf16") }
    }

    /// The first `flags` line of `cpuinfo` (`/proc/cpuinfo` when nil), split into flags; nil when
    /// there is none.
    static func cpuFlags(cpuinfo: String? = nil) -> Set<Substring>? {
        (cpuinfo.map(CPUInfo.init(text:)) ?? CPUInfo.current())?.flags
    }

    /// The library `--blas auto` picks: oneDNN where the CPU has AVX-512 (`avx512f`, `avx512bw`,
    /// `avx512vl` in `/proc/cpuinfo`) and oneDNN opens, else OpenBLAS.
    ///
    /// oneDNN dispatches on the instruction set, while OpenBLAS 0.3.21 (Debian 12) picks kernels by CPU
    /// model and falls back to its AVX2 `Haswell` kernels on CPUs it predates (measured on a Zen 5);
    /// on AVX2-only CPUs OpenBLAS stays (see docs/benchmarks.md for the figures behind the rule).
    public static func automaticLibrary(cpuinfo: String? = nil) -> Library {
        guard let flags = cpuFlags(cpuinfo: cpuinfo),
              ["avx512f", "avx512bw", "avx512vl"].allSatisfy({ flags.contains(Substring($0)) }) else { return .openblas }
        return (try? Backend.load(.onednn)) != nil ? .onednn : .openblas
    }

    /// Sends every later gemm through ``Precision/bf16`` (or back to the library's sgemm for fp32).
    ///
    /// Call once at start-up, before any thread runs a gemm.
    /// - Throws: ``PrecisionError`` naming what is missing (see ``loadBF16Gemm(cpuinfo:sharedObjects:)``).
    public static func select(precision: Precision) throws {
        guard precision == .bf16 else { bf16 = nil; return }
        let gemm = try loadBF16Gemm()
        gemm.setThreads(threadCount)
        bf16 = gemm
    }

    /// Opens oneDNN's bf16 gemm (`dlopen`, `RTLD_LOCAL`) after checking the CPU's `avx512_bf16` flag,
    /// and runs a 2 × 2 × 2 probe product against its exact value, so an unusable host fails here,
    /// before any work. Changes nothing global (tests call it directly).
    /// - Parameters:
    ///   - cpuinfo: `/proc/cpuinfo`'s text (read when nil).
    ///   - sharedObjects: the libraries to try (oneDNN's names when nil).
    /// - Throws: ``PrecisionError``: no `avx512_bf16`, no oneDNN, or the probe failed (status 3,
    ///   `dnnl_unimplemented`, where `ONEDNN_MAX_CPU_ISA` or the CPU allows no AVX-512 kernel).
    public static func loadBF16Gemm(cpuinfo: String? = nil, sharedObjects: [String]? = nil) throws -> BF16Gemm {
        if cpuHasAVX512BF16(cpuinfo: cpuinfo) == false {
            throw PrecisionError(precision: .bf16, reason: "the CPU lacks avx512_bf16 (/proc/cpuinfo flags); bf16 gemms would be emulated, slower than fp32")
        }
        setenv("OMP_WAIT_POLICY", "passive", 0)   // as for --blas onednn: see Backend.load
        var reasons: [String] = []
        for name in sharedObjects ?? Library.onednn.sharedObjects {
            guard let handle = dlopen(name, RTLD_NOW | RTLD_LOCAL) else {
                reasons.append(dlerror().map { String(cString: $0) } ?? "\(name): cannot be opened")
                continue
            }
            guard let address = dlsym(handle, "dnnl_gemm_bf16bf16f32") else {
                reasons.append("\(name): no symbol dnnl_gemm_bf16bf16f32")
                continue
            }
            let setThreads = dlsym(handle, "omp_set_num_threads").map { unsafeBitCast($0, to: BF16Gemm.OMPSetThreads.self) }
            let gemm = BF16Gemm(function: unsafeBitCast(address, to: BF16Gemm.Function.self), setThreadsFunction: setThreads,
                                details: oneDNNDescription(handle, name))
            // Probe: [1 2; 3 4] · [5 6; 7 8] = [19 22; 43 50], all exact in bf16.
            let a: [UInt16] = [1, 2, 3, 4].map { BFloat16.round(Float($0)) }, b: [UInt16] = [5, 6, 7, 8].map { BFloat16.round(Float($0)) }
            var c = [Float](repeating: 0, count: 4)
            let status = c.withUnsafeMutableBufferPointer { cb in
                gemm(transposeA: false, transposeB: false, m: 2, n: 2, k: 2, alpha: 1, a: a, lda: 2, b: b, ldb: 2, beta: 0, c: cb.baseAddress!, ldc: 2)
            }
            guard status == 0, c == [19, 22, 43, 50] else {
                throw PrecisionError(precision: .bf16, reason: status != 0
                    ? "\(gemm.details): dnnl_gemm_bf16bf16f32 returned status \(status)\(status == 3 ? " (unimplemented: the CPU, or ONEDNN_MAX_CPU_ISA, allows no AVX-512 bf16 kernel)" : "")"
                    : "\(gemm.details): the probe product gave \(c), expected [19.0, 22.0, 43.0, 50.0]")
            }
            return gemm
        }
        throw PrecisionError(precision: .bf16, reason: "oneDNN's bf16 gemm cannot be opened (install libdnnl-dev): " + reasons.joined(separator: "; "))
    }

    /// `oneDNN 2.6.3 (libdnnl.so.2)` from the opened library's `dnnl_version`, or without the version
    /// when it lacks the symbol.
    static func oneDNNDescription(_ handle: UnsafeMutableRawPointer, _ name: String) -> String {
        typealias Version = @convention(c) () -> UnsafePointer<Int32>?
        guard let v = dlsym(handle, "dnnl_version").flatMap({ unsafeBitCast($0, to: Version.self)() }) else { return "oneDNN (\(name))" }
        return "oneDNN \(v[0]).\(v[1]).\(v[2]) (\(name))"
    }

    /// The bf16 gemm's library and version, nil under fp32.
    public static var bf16Details: String? { bf16?.details }

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
        bf16?.setThreads(1)
    }

    /// Sends every later gemm call to `library`, with OpenBLAS's thread count (``threadCount``).
    ///
    /// Call once at start-up, before any thread runs a gemm.
    /// - Throws: ``LibraryError`` when the library is not installed or lacks an entry point.
    public static func select(_ library: Library) throws {
        let backend = try Backend.load(library)
        backend.setThreads(threadCount)
        active = backend
        bf16?.setThreads(threadCount)
    }

    /// `C = alpha * op(A) * op(B) + beta * C`, all row-major, with the library chosen by ``select(_:)``,
    /// or under ``Precision/bf16`` (``select(precision:)``) with both operands rounded to bf16 and
    /// oneDNN's bf16 gemm (fp32 sums and output).
    ///
    /// `op(A)` is `m × k`, `op(B)` is `k × n`, `C` is `m × n`. `lda`, `ldb`, `ldc` are the row strides
    /// of the matrices as stored (before the transpose), in elements.
    /// The corresponding C functions are `cblas_sgemm`, `bli_sgemm`, `dnnl_sgemm` and `dnnl_gemm_bf16bf16f32`.
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
        if let bf16 {
            bf16.gemm(transposeA: transposeA, transposeB: transposeB, m: m, n: n, k: k, alpha: alpha,
                      a: a, lda: lda, b: b, ldb: ldb, beta: beta, c: c, ldc: ldc)
            return
        }
        active.gemm(transposeA: transposeA, transposeB: transposeB, m: m, n: n, k: k, alpha: alpha,
                    a: a, lda: lda, b: b, ldb: ldb, beta: beta, c: c, ldc: ldc)
    }

    /// ``gemm(transposeA:transposeB:m:n:k:alpha:a:lda:b:ldb:beta:c:ldc:)`` with `A` not transposed, its
    /// `m` rows (and `C`'s) split into one contiguous block per thread of the rank, each block a
    /// single-threaded library call on its own thread (``Parallel/forEachTask(count:workers:_:)``),
    /// under oneDNN at fp32; otherwise (other libraries, bf16, one thread) the plain call.
    ///
    /// For shapes that oneDNN 2.6 threads poorly: the decoder's down projection forward (NT 1024 × 576
    /// × 1536, `beta = 1`) ran at 208.7 GFLOP/s as one 2-thread call and 253.6 as two 1-thread halves
    /// on one contended Zen 5 core (the 2-thread call does more work: it splits the long `k`), and at
    /// 410 GFLOP/s on two quiet cores against 497 for the step's other large forward shape.
    /// Each row's sum runs over the whole `k` in one call, so the result does not depend on the
    /// thread count for a given row-block size; it may differ in the last bits from the plain call.
    public static func gemmSplittingRows(
        transposeB: Bool,
        m: Int, n: Int, k: Int,
        alpha: Float = 1,
        a: UnsafePointer<Float>, lda: Int,
        b: UnsafePointer<Float>, ldb: Int,
        beta: Float = 0,
        c: UnsafeMutablePointer<Float>, ldc: Int,
        onAnyLibrary: Bool = false  // tests: split under OpenBLAS too
    ) {
        let threads = threadCount
        guard library == .onednn || onAnyLibrary, precision == .fp32, threads > 1, m >= 2 * threads else {
            gemm(transposeA: false, transposeB: transposeB, m: m, n: n, k: k, alpha: alpha,
                 a: a, lda: lda, b: b, ldb: ldb, beta: beta, c: c, ldc: ldc)
            return
        }
        Parallel.withSingleThreadedBLAS { threads in
            Parallel.forEachTask(count: threads, workers: threads) { block, _ in
                useOneThreadOnCallingThread()  // oneDNN: per-thread count (restored on the caller)
                let first = m * block / threads, rows = m * (block + 1) / threads - first
                gemm(transposeA: false, transposeB: transposeB, m: rows, n: n, k: k, alpha: alpha,
                     a: a + first * lda, lda: lda, b: b, ldb: ldb, beta: beta, c: c + first * ldc, ldc: ldc)
            }
        }
    }

    /// A row stride, in floats, for a matrix of `columns` columns that a gemm reads down its columns
    /// (the transposed `A` of a weight gradient): `columns + 32` when `columns` is a multiple of 256
    /// (rows a multiple of 1 KiB apart, which map onto few cache sets), else `columns`. Measured with
    /// oneDNN 2.6 on a Zen 5 core: 12 KiB rows (SmolLM2's gate/up cache) ran 17% slower than padded
    /// ones, 192 KiB rows (its logits) 8% slower (``SwiGLU/rowStride(width:)``, ``Classifier/logitsStride(vocabulary:)``).
    public static func paddedStride(columns: Int) -> Int {
        columns % 256 == 0 ? columns + 32 : columns
    }

    /// The elements a buffer of `rows` rows of `columns` floats, `stride` floats apart, must hold: the
    /// last row ends at `(rows − 1) · stride + columns` (0 for no rows).
    public static func stridedCount(rows: Int, columns: Int, stride: Int) -> Int {
        rows == 0 ? 0 : (rows - 1) * stride + columns
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
            bf16?.setThreads(newValue)
        }
    }

    /// The kernel set OpenBLAS picked for this CPU (or `OPENBLAS_CORETYPE`), e.g. `Cooperlake`.
    /// The corresponding C function is `openblas_get_corename`.
    public static var openBLASCore: String {
        zsft_blas_corename().map { String(cString: $0) } ?? "unknown"
    }
}
