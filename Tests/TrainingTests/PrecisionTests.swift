import Foundation
import TestSupport
import Testing
import Training
import Kernels

/// `train --precision bf16`: bf16 gemm operands with fp32 master weights, sums and optimizer.
///
/// Tolerances (docs/testing.md): bf16 against fp32, losses within 1e-3 relative per step over 10 steps
/// (tiny model, lr 1e-3: rounding the operands moves a loss by ~1e-5) and at least one step apart by
/// more than 1e-7 (the gemms really ran in bf16); 2 ranks against 1 rank in bf16, losses 1e-4
/// relative and final parameters 5e-4 absolute at stages 2 and 3 (a reduction-order difference of
/// fp32 rounding size can flip a bf16 rounding of an operand, which AdamW's 1/√v can turn into a
/// sizeable share of one update of lr 1e-3: measured 4.9e-6 on the losses, 5.2e-5 on the parameters).
@Suite(.serialized) struct PrecisionTests {
    static let common = ["--model", "tiny", "--seq-len", "64", "--max-steps", "10", "--lr", "1e-3", "--warmup-steps", "2",
                         "--weight-decay", "0.1", "--clip-grad-norm", "1.0", "--seed", "5"]

    @Test func bf16TracksFP32AndMatchesAcrossRanks() throws {
        let scratch = try ScratchDirectory()
        let data = scratch.url.appendingPathComponent("data.jsonl")
        try writeJSONL(syntheticExamples(count: 160, seed: 9), to: data)
        let base = Self.common + ["--data", data.path]
        let fp32 = try TrainingRun.run(ranks: 1, arguments: base + ["--zero-stage", "0", "--micro-batch-size", "8"], in: scratch.url, label: "fp32")
        let bf16: TrainingRun
        do {
            bf16 = try TrainingRun.run(ranks: 1, arguments: base + ["--zero-stage", "0", "--micro-batch-size", "8", "--precision", "bf16"],
                                       in: scratch.url, label: "bf16")
        } catch let failure as TestFailure where "\(failure)".contains("--precision bf16 is not available on this host") {
            print("PrecisionTests: skipping, this host cannot run bf16 gemms: \(failure.description.split(separator: "\n").last ?? "")")
            return
        }
        #expect(bf16.stdout.contains("gemm: bf16 operands"), "the run did not say it used bf16 gemms")
        #expect(fp32.losses.count == 10 && bf16.losses.count == 10)
        let relative = zip(bf16.losses, fp32.losses).map { abs($0 - $1) / abs($1) }
        #expect(relative.allSatisfy { $0 <= 1e-3 }, "bf16 strays from fp32: relative loss differences \(relative)")
        #expect(relative.contains { $0 > 1e-7 }, "bf16 losses equal fp32's to 1e-7: were the gemms bf16? \(relative)")
        print("precision: bf16 vs fp32 largest relative loss difference \(relative.max() ?? 0)")
        for stage in ["2", "3"] {
            let label = "bf16-n2-stage\(stage)"
            let run = try TrainingRun.run(ranks: 2, arguments: base + ["--zero-stage", stage, "--micro-batch-size", "4", "--precision", "bf16"],
                                          in: scratch.url, label: label)
            let losses = zip(run.losses, bf16.losses).map { abs($0 - $1) / abs($1) }
            #expect(run.losses.count == 10 && losses.allSatisfy { $0 <= 1e-4 }, "\(label): relative loss differences \(losses)")
            let worst = run.largestParameterDifference(from: bf16, label: label).difference
            #expect(worst <= 5e-4, "\(label): final parameters differ by \(worst)")
            print("precision \(label): largest loss difference \(losses.max() ?? 0) relative, parameters \(worst) absolute")
        }
    }

    /// Where oneDNN may use no AVX-512 bf16 kernel (`ONEDNN_MAX_CPU_ISA=AVX2`, what an AVX2-only CPU
    /// sees), `--precision bf16` fails at start-up on every rank with the reason, before any step and
    /// without writing the output directory; under mpirun the job ends with a non-zero status.
    @Test func bf16WithoutAVX512IsRefusedBeforeWork() throws {
        let scratch = try ScratchDirectory()
        let data = scratch.url.appendingPathComponent("data.jsonl")
        try writeJSONL(syntheticExamples(count: 16, seed: 3), to: data)
        let output = scratch.url.appendingPathComponent("out")
        for ranks in [0, 2] {
            let result = try MPIRun.run(ranks: ranks, arguments: ["train"] + Self.common + ["--data", data.path, "--precision", "bf16",
                                                                                             "--output-dir", output.path],
                                        environment: ["ONEDNN_MAX_CPU_ISA": "AVX2"], timeout: 120)
            #expect(result.status != 0, "ranks \(ranks): exited 0")
            let text = result.stdout + result.stderr
            #expect(text.contains("--precision bf16 is not available on this host") && text.contains("--precision fp32"), "ranks \(ranks): \(text)")
            #expect(!text.contains("step 1/"), "ranks \(ranks): a step ran")
            #expect(!FileManager.default.fileExists(atPath: output.path), "ranks \(ranks): the output directory was written")
        }
    }

    /// The default library is `auto`: the run names the library ``BLAS/automaticLibrary(cpuinfo:)``
    /// picks here (oneDNN on an AVX-512 host with oneDNN installed, else OpenBLAS), and trains as
    /// `--blas openblas` does: losses 1e-5 relative (a different summation order; bitwise when auto
    /// picks OpenBLAS).
    @Test func defaultLibraryIsTheAutomaticChoice() throws {
        let scratch = try ScratchDirectory()
        let data = scratch.url.appendingPathComponent("data.jsonl")
        try writeJSONL(syntheticExamples(count: 64, seed: 4), to: data)
        let arguments = Self.common + ["--data", data.path, "--zero-stage", "0", "--micro-batch-size", "8"]
        // ZERO_SFT_BLAS empty: neither the option nor the variable names a library.
        let automatic = try MPIRun.run(ranks: 0, arguments: ["train"] + arguments + ["--metrics-file", scratch.url.appendingPathComponent("auto.jsonl").path],
                                       environment: ["ZERO_SFT_BLAS": ""], timeout: 300)
        let openblas = try TrainingRun.run(ranks: 0, arguments: arguments + ["--blas", "openblas"], in: scratch.url, label: "openblas", saveModel: false)
        #expect(automatic.status == 0, "\(automatic.stderr)")
        let expected = BLAS.automaticLibrary() == .onednn ? "gemm: fp32 (oneDNN" : "gemm: fp32 (OpenBLAS"
        #expect(automatic.stdout.contains(expected), "expected '\(expected)' in the log:\n\(automatic.stdout)")
        #expect(openblas.stdout.contains("gemm: fp32 (OpenBLAS"))
        let lines = try String(contentsOf: scratch.url.appendingPathComponent("auto.jsonl"), encoding: .utf8).split(separator: "\n")
        let losses = try lines.map { try JSONSerialization.jsonObject(with: Data($0.utf8)) as! [String: Any] }
            .filter { $0["eval"] == nil }.map { $0["loss"] as! Double }
        #expect(losses.count == openblas.losses.count && losses.count == 10)
        for (a, b) in zip(losses, openblas.losses) { #expect(abs(a - b) <= 1e-5 * abs(b), "auto \(a), openblas \(b)") }
    }
}
