import Testing
import TestSupport
@testable import Kernels

/// Every BLAS library zero-sft can select gives OpenBLAS's results on SmolLM2-135M's gemm shapes.
@Suite(.serialized) struct BLASLibraryTests {
    /// SmolLM2-135M at 4 × 256 tokens, half of them labelled: the shapes `zero-sft bench-gemm` times.
    static let shapes = GemmShape.training(
        tokens: 1024, hiddenSize: 576, intermediateSize: 1536, queryWidth: 576, keyValueWidth: 192,
        vocabularySize: 49152, layers: 30, queryHeads: 9, headDimension: 64, sequenceLength: 256, supervisedRows: 512)

    /// The library, or nil after printing why the test skips it.
    func backend(_ library: BLAS.Library) -> BLAS.Backend? {
        do { return try BLAS.Backend.load(library) } catch {
            print("BLASLibraryTests: skipping \(library): \(error)")
            return nil
        }
    }

    /// `C` from `backend` against OpenBLAS's on each shape, inputs in [-1, 1), with `alpha = 0.5` and
    /// `beta = 1` onto a non-zero `C`. Tolerance: `1e-5 · max |C|` per shape (fp32 with a different
    /// summation order; a wrong transpose or stride is off by O(1)).
    func compare(_ library: BLAS.Library) {
        guard let backend = backend(library) else { return }
        var random = TestRandom(seed: 7)
        for shape in Self.shapes {
            let a = (0..<shape.aCount).map { _ in (2 * random.uniform() - 1) }
            let b = (0..<shape.bCount).map { _ in (2 * random.uniform() - 1) }
            let c0 = (0..<shape.cCount).map { _ in (2 * random.uniform() - 1) }
            func run(_ backend: BLAS.Backend) -> [Float] {
                var c = c0
                a.withUnsafeBufferPointer { a in b.withUnsafeBufferPointer { b in c.withUnsafeMutableBufferPointer { c in
                    backend.gemm(transposeA: shape.transposeA, transposeB: shape.transposeB, m: shape.m, n: shape.n, k: shape.k,
                                 alpha: 0.5, a: a.baseAddress!, lda: shape.lda, b: b.baseAddress!, ldb: shape.ldb,
                                 beta: 1, c: c.baseAddress!, ldc: shape.ldc)
                } } }
                return c
            }
            let expected = run(.openblas), found = run(backend)
            let scale = expected.map(abs).max() ?? 1
            var worst = 0 as Float, at = 0
            for i in expected.indices where abs(found[i] - expected[i]) > worst { worst = abs(found[i] - expected[i]); at = i }
            #expect(worst <= 1e-5 * scale,
                    "\(library) \(shape): |ΔC| \(worst) at (\(at / shape.n), \(at % shape.n)) exceeds 1e-5 × max|C| \(scale)")
        }
    }

    @Test func blisMatchesOpenBLAS() { compare(.blis) }
    @Test func oneDNNMatchesOpenBLAS() { compare(.onednn) }

    /// Row strides wider than the matrix (a sub-block of a bigger buffer, as attention reads one head).
    @Test func stridedBlocksMatchOpenBLAS() {
        for library in [BLAS.Library.blis, .onednn] {
            guard let backend = backend(library) else { continue }
            let m = 64, n = 37, k = 64, lda = 576, ldb = 192, ldc = 100
            var random = TestRandom(seed: 3)
            let a = (0..<m * lda).map { _ in (2 * random.uniform() - 1) }, b = (0..<n * ldb).map { _ in (2 * random.uniform() - 1) }
            func run(_ backend: BLAS.Backend) -> [Float] {
                var c = [Float](repeating: 2, count: m * ldc)
                a.withUnsafeBufferPointer { a in b.withUnsafeBufferPointer { b in c.withUnsafeMutableBufferPointer { c in
                    backend.gemm(transposeA: false, transposeB: true, m: m, n: n, k: k, a: a.baseAddress! + 64, lda: lda,
                                 b: b.baseAddress! + 3, ldb: ldb, c: c.baseAddress!, ldc: ldc)
                } } }
                return c
            }
            let expected = run(.openblas), found = run(backend)
            let worst = zip(expected, found).map { abs($0 - $1) }.max() ?? 0
            #expect(worst <= 1e-5 * (expected.map(abs).max() ?? 1), "\(library): strided block off by \(worst)")
            // Columns past n keep their value 2: the library wrote only the m × n block.
            #expect((0..<m).allSatisfy { r in (n..<ldc).allSatisfy { found[r * ldc + $0] == 2 } }, "\(library) wrote outside C's m × n block")
        }
    }

    /// Asking for a library that cannot be opened names it, its package and the loader's message.
    @Test func missingLibraryIsNamed() {
        #expect(throws: BLAS.LibraryError.self) { try BLAS.Backend.load(.blis, from: ["libzero-sft-absent.so.9"]) }
        do {
            _ = try BLAS.Backend.load(.onednn, from: ["libzero-sft-absent.so.9"])
        } catch {
            let text = "\(error)"
            #expect(text.contains("onednn") && text.contains("libdnnl-dev") && text.contains("libzero-sft-absent.so.9"), "message: \(text)")
        }
    }

    /// The active library stays OpenBLAS unless selected, and OpenBLAS always loads.
    @Test func openBLASIsTheDefault() throws {
        #expect(BLAS.library == .openblas)
        #expect(try BLAS.Backend.load(.openblas).library == .openblas)
        #expect(!BLAS.openBLASCore.isEmpty)
    }

    /// `--blas auto`: OpenBLAS on a CPU without AVX-512 (or with only part of it), oneDNN with it when
    /// oneDNN opens (else OpenBLAS).
    @Test func automaticChoiceFollowsTheInstructionSet() {
        #expect(BLAS.automaticLibrary(cpuinfo: "processor\t: 0\nflags\t\t: fpu sse2 avx avx2 fma\n") == .openblas)
        #expect(BLAS.automaticLibrary(cpuinfo: "flags\t\t: avx2 avx512f avx512cd\n") == .openblas)
        let oneDNN = (try? BLAS.Backend.load(.onednn)) != nil
        #expect(BLAS.automaticLibrary(cpuinfo: "flags\t\t: avx2 avx512f avx512dq avx512bw avx512vl\n") == (oneDNN ? .onednn : .openblas))
        #expect(BLAS.library == .openblas)   // choosing changes nothing global
    }
}
