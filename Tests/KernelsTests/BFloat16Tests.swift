import Foundation
import Testing
import TestSupport
@testable import Kernels

/// `--precision bf16`: the rounding is PyTorch's, and the bf16 gemm is exactly an fp32 gemm of the
/// rounded operands (up to fp32 summation order).
@Suite(.serialized) struct BFloat16Tests {
    struct Golden: Decodable {
        var source: String
        var float_bits: [UInt32]
        var bf16_bits: [UInt16]
    }

    /// Tests/KernelsTests/Fixtures/bf16_rounding.json, from tools/make_bf16_golden.py (torch 2.13).
    static func golden() throws -> Golden {
        let url = try #require(Bundle.module.url(forResource: "bf16_rounding", withExtension: "json", subdirectory: "Fixtures"))
        return try JSONDecoder().decode(Golden.self, from: Data(contentsOf: url))
    }

    /// Every pattern of the fixture — ties either way, NaNs, subnormals, overflow to infinity, random
    /// bits — rounds as `tensor.to(torch.bfloat16)` does, one by one and through the vectorised
    /// matrix path (rows of 16 and a tail, a row stride wider than the row).
    @Test func roundingIsPyTorchs() throws {
        let golden = try Self.golden()
        #expect(golden.float_bits.count == golden.bf16_bits.count && golden.float_bits.count > 4000)
        let floats = golden.float_bits.map { Float(bitPattern: $0) }
        for (i, x) in floats.enumerated() {
            let found = BFloat16.round(x)
            #expect(found == golden.bf16_bits[i],
                    "0x\(String(golden.float_bits[i], radix: 16)): 0x\(String(found, radix: 16)), torch 0x\(String(golden.bf16_bits[i], radix: 16))")
        }
        // As one row (4031 values: 251 vectors and a tail of 15).
        var row = [UInt16](repeating: 0, count: floats.count)
        floats.withUnsafeBufferPointer { f in row.withUnsafeMutableBufferPointer { r in
            BFloat16.round(f.baseAddress!, rows: 1, columns: f.count, ld: f.count, into: r.baseAddress!)
        } }
        #expect(row == golden.bf16_bits)
        // As a 40 × 99 block of a matrix with row stride 100: the 100th column is never read.
        let rows = 40, columns = 99, ld = 100
        var block = [UInt16](repeating: 0, count: rows * columns)
        floats.withUnsafeBufferPointer { f in block.withUnsafeMutableBufferPointer { b in
            BFloat16.round(f.baseAddress!, rows: rows, columns: columns, ld: ld, into: b.baseAddress!)
        } }
        let expected = (0..<rows).flatMap { r in (0..<columns).map { golden.bf16_bits[r * ld + $0] } }
        #expect(block == expected)
    }

    /// `--param-dtype bf16`'s vector paths against the fixture: rounding a vector to patterns (split
    /// over threads: the fixture repeated past the 64 Ki-element grain), widening them back (exact:
    /// the pattern in the upper half), and rounding in place in fp32 (`float(torch's pattern)`, NaN
    /// to the NaN `0xFFFF0000`).
    @Test func vectorRoundingAndWideningAreTorchs() throws {
        let golden = try Self.golden()
        let copies = (1 << 17) / golden.float_bits.count + 1
        let floats = (0..<copies).flatMap { _ in golden.float_bits.map { Float(bitPattern: $0) } }
        let expected = (0..<copies).flatMap { _ in golden.bf16_bits }
        var patterns = [UInt16](repeating: 0, count: floats.count)
        var widened = [Float](repeating: 0, count: floats.count)
        var kept = [Float](repeating: 0, count: floats.count)
        floats.withUnsafeBufferPointer { f in
            patterns.withUnsafeMutableBufferPointer { BFloat16.round(f, into: $0) }
            kept.withUnsafeMutableBufferPointer { BFloat16.roundKeepingFloat(f, into: $0) }
        }
        patterns.withUnsafeBufferPointer { p in widened.withUnsafeMutableBufferPointer { BFloat16.widen(p, into: $0) } }
        #expect(patterns == expected, "vector rounding differs from torch's at \(zip(patterns, expected).filter { $0 != $1 }.count) elements")
        #expect(zip(widened, expected).allSatisfy { $0.bitPattern == UInt32($1) << 16 }, "widening is not exact")
        #expect(zip(kept, expected).allSatisfy { $0.bitPattern == UInt32($1) << 16 }, "rounding kept in fp32 differs from torch's pattern")
        // In place.
        var inPlace = floats
        inPlace.withUnsafeMutableBufferPointer { BFloat16.roundKeepingFloat(UnsafeBufferPointer($0), into: $0) }
        #expect(zip(inPlace, kept).allSatisfy { $0.bitPattern == $1.bitPattern })
    }

    /// The bf16 gemm, or nil after printing why the test skips (no oneDNN, or a CPU without avx512_bf16).
    func bf16Gemm() -> BF16Gemm? {
        do { return try BLAS.loadBF16Gemm() } catch {
            print("BFloat16Tests: skipping the bf16 gemm: \(error)")
            return nil
        }
    }

    /// On each shape (SmolLM2-135M's layer and attention products, both transposes, alpha 0.5 and
    /// beta 1 onto a non-zero C, and a strided block), the bf16 gemm equals OpenBLAS's sgemm of the
    /// bf16-rounded operands to 1e-5 · max|C| (products of bf16 values are exact in fp32; only the
    /// summation order differs), and differs from the sgemm of the unrounded operands by more than
    /// 1e-4 · max|C| (the operands really are rounded).
    @Test func gemmIsSgemmOfRoundedOperands() {
        guard let gemm = bf16Gemm() else { return }
        struct Case { var ta, tb: Bool; var m, n, k, lda, ldb, ldc: Int }
        var cases: [Case] = [
            Case(ta: false, tb: true, m: 1024, n: 576, k: 576, lda: 576, ldb: 576, ldc: 576),     // q/o forward NT
            Case(ta: false, tb: false, m: 1024, n: 576, k: 1536, lda: 1536, ldb: 576, ldc: 576),  // down input gradient NN
            Case(ta: true, tb: false, m: 1536, n: 576, k: 1024, lda: 1536, ldb: 576, ldc: 576),   // gate weight gradient TN
            Case(ta: true, tb: true, m: 33, n: 17, k: 65, lda: 33, ldb: 65, ldc: 17),             // TT, odd sizes
        ]
        cases.append(Case(ta: false, tb: true, m: 192, n: 256, k: 64, lda: 576, ldb: 192, ldc: 260))  // attention: heads in wider rows
        var random = TestRandom(seed: 11)
        for shape in cases {
            let aCount = (shape.ta ? shape.k : shape.m) * shape.lda, bCount = (shape.tb ? shape.n : shape.k) * shape.ldb
            let a = (0..<aCount).map { _ in 2 * random.uniform() - 1 }, b = (0..<bCount).map { _ in 2 * random.uniform() - 1 }
            let c0 = (0..<shape.m * shape.ldc).map { _ in 2 * random.uniform() - 1 }
            let rounded = { (x: [Float]) in x.map { BFloat16.float(BFloat16.round($0)) } }
            func run(_ a: [Float], _ b: [Float], bf16: Bool) -> [Float] {
                var c = c0
                a.withUnsafeBufferPointer { a in b.withUnsafeBufferPointer { b in c.withUnsafeMutableBufferPointer { c in
                    if bf16 {
                        gemm.gemm(transposeA: shape.ta, transposeB: shape.tb, m: shape.m, n: shape.n, k: shape.k, alpha: 0.5,
                                  a: a.baseAddress!, lda: shape.lda, b: b.baseAddress!, ldb: shape.ldb, beta: 1, c: c.baseAddress!, ldc: shape.ldc)
                    } else {
                        BLAS.Backend.openblas.gemm(transposeA: shape.ta, transposeB: shape.tb, m: shape.m, n: shape.n, k: shape.k, alpha: 0.5,
                                                   a: a.baseAddress!, lda: shape.lda, b: b.baseAddress!, ldb: shape.ldb, beta: 1,
                                                   c: c.baseAddress!, ldc: shape.ldc)
                    }
                } } }
                return c
            }
            let found = run(a, b, bf16: true), exact = run(rounded(a), rounded(b), bf16: false), unrounded = run(a, b, bf16: false)
            let scale = exact.map(abs).max() ?? 1
            let worst = zip(found, exact).map { abs($0 - $1) }.max() ?? 0
            let fromUnrounded = zip(found, unrounded).map { abs($0 - $1) }.max() ?? 0
            #expect(worst <= 1e-5 * scale, "\(shape): |bf16 gemm − sgemm of rounded operands| \(worst) > 1e-5 × \(scale)")
            #expect(fromUnrounded > 1e-4 * scale, "\(shape): bf16 gemm within \(fromUnrounded) of the unrounded sgemm: not rounded?")
            // Columns past n keep C's old value: only the m × n block was written.
            let outside = (0..<shape.m).allSatisfy { r in (shape.n..<shape.ldc).allSatisfy { found[r * shape.ldc + $0] == c0[r * shape.ldc + $0] } }
            #expect(outside, "\(shape): wrote outside C's m × n block")
        }
        #expect(BF16Scratch.bytes.load(ordering: .relaxed) > 0)
    }

    /// A host that cannot run bf16 fast is refused with what is missing, before any work.
    @Test func unusableHostIsRefused() {
        do {
            _ = try BLAS.loadBF16Gemm(cpuinfo: "processor\t: 0\nflags\t\t: fpu sse2 avx avx2 fma\n")
            Issue.record("a CPU without avx512_bf16 was accepted")
        } catch {
            #expect("\(error)".contains("avx512_bf16") && "\(error)".contains("--precision fp32"), "message: \(error)")
        }
        do {
            _ = try BLAS.loadBF16Gemm(cpuinfo: "flags\t: avx512f avx512_bf16\n", sharedObjects: ["libzero-sft-absent.so.9"])
            Issue.record("a missing oneDNN was accepted")
        } catch {
            #expect("\(error)".contains("libdnnl-dev") && "\(error)".contains("libzero-sft-absent.so.9"), "message: \(error)")
        }
        #expect(BLAS.cpuHasAVX512BF16(cpuinfo: "flags : avx512f avx512_bf16 avx512_vnni") == true)
        #expect(BLAS.cpuHasAVX512BF16(cpuinfo: "flags : avx512f avx512bw") == false)
        #expect(BLAS.precision == .fp32)   // loading changed nothing global
    }
}
