import Foundation
import TestSupport
import Testing

/// Reductions that must not depend on how the data is split (issue 12), on SmolLM2-135M's real
/// shapes (28M-element embedding, 30 layers) — the tiny model's equivalence tests cannot see a
/// Float sum drifting over millions of elements.
///
/// Ten chats in one packed row of ≤ 512 tokens (Fixtures/smollm2-gradnorm/data.jsonl), so at every
/// rank count one rank computes the row and the others hold empty micro-batches: the gradient itself
/// is identical, only the way it is split into shards (and reduced) changes. The reference is
/// transformers in fp32 with the norm summed in float64 (tools/generate_gradnorm_golden.py).
@Suite(.serialized) struct SmolLM2GradientNormTests {
    struct Golden: Decodable {
        struct Exact: Decodable {
            var loss: Double
            var grad_norm: Double
        }
        var loss: Double
        var grad_norm: Double
        var supervised: Int
        /// The same computation in float64 (the model cast to double): the exact value fp32 approximates.
        var float64: Exact
        /// In float64 on every parameter rounded to bf16 first: `--param-dtype bf16`'s exact value.
        var bf16_parameters_float64: Exact
    }

    static let packageRoot = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    static let fixtures = packageRoot.appendingPathComponent("Tests/TrainingTests/Fixtures/smollm2-gradnorm")
    static let model = packageRoot.appendingPathComponent("models/SmolLM2-135M-Instruct.Q4_1.gguf")

    /// The GGUF, or a recorded failure saying how to fetch it (never a silent skip).
    static func modelPath() -> String? {
        guard FileManager.default.fileExists(atPath: model.path) else {
            Issue.record("\(model.path) is missing: run `launch/fetch-smollm2` from the repository root (CI does)")
            return nil
        }
        return model.path
    }

    static func arguments(model: String, stage: Int, steps: Int) -> [String] {
        ["--model", model, "--data", fixtures.appendingPathComponent("data.jsonl").path, "--seq-len", "512",
         "--micro-batch-size", "1", "--grad-accum", "1", "--max-steps", "\(steps)", "--lr", "1e-4",
         "--clip-grad-norm", "1.0", "--no-shuffle", "--zero-stage", "\(stage)"]
    }

    /// Every rank count and every stage at least once (also measured, equally: (4, 0) and (1, 3)).
    static let cases: [(ranks: Int, stage: Int)] = [(1, 0), (2, 1), (2, 2), (4, 3), (2, 3)]

    /// Against torch in float64 (the model cast to double: the value every fp32 implementation
    /// approximates): measured 1.3e-6 relative for the norm and 1.6e-7 for the loss at every N and stage.
    /// Torch's own fp32 run is 7.9e-6 and 3.3e-6 from it (golden.json's top-level figures), so two fp32
    /// implementations cannot agree to 1e-6 with each other; zero-sft agrees with the exact value to 2e-6
    /// (norm) and 1e-6 (loss), and with torch's fp32 run within torch's own fp32 error (1e-5 bound).
    /// Before the norm was summed in Double the 1-rank norm was 4.1e-3 low and moved with N; before the
    /// softmax denominators and RMSNorm's mean square were summed in Double the loss was 6.7e-6 and the
    /// norm 1.5e-5 from float64. Across rank counts and stages the norms agree to 1e-6 (measured ≤ 1.2e-9).
    @Test func firstStepGradientNormEqualsTorchAtEveryRankCountAndStage() throws {
        guard let model = Self.modelPath() else { return }
        let golden = try JSONDecoder().decode(Golden.self, from: Data(contentsOf: Self.fixtures.appendingPathComponent("golden.json")))
        let scratch = try ScratchDirectory()
        var report: [String] = []
        var norms: [(String, Double)] = []
        for c in Self.cases {
            let label = "n\(c.ranks)-stage\(c.stage)"
            let run = try TrainingRun.run(ranks: c.ranks, arguments: Self.arguments(model: model, stage: c.stage, steps: 1),
                                          in: scratch.url, label: label, saveModel: false)
            let norm = run.metrics[0]["grad_norm"] as! Double, loss = run.losses[0]
            let exact = golden.float64
            let normError = abs(norm - exact.grad_norm) / exact.grad_norm, lossError = abs(loss - exact.loss) / exact.loss
            let normErrorFP32 = abs(norm - golden.grad_norm) / golden.grad_norm, lossErrorFP32 = abs(loss - golden.loss) / golden.loss
            report.append(String(format: "%@: grad norm %.9f (torch float64 %.9f: %.2e relative; fp32 %.2e), loss %.9f (%.2e; fp32 %.2e)",
                                 label, norm, exact.grad_norm, normError, normErrorFP32, loss, lossError, lossErrorFP32))
            #expect(normError <= 2e-6, "\(label): grad norm \(norm), torch float64 \(exact.grad_norm): \(normError) relative")
            #expect(lossError <= 1e-6, "\(label): loss \(loss), torch float64 \(exact.loss): \(lossError) relative")
            #expect(normErrorFP32 <= 1e-5 && lossErrorFP32 <= 1e-5,
                    "\(label): torch fp32 grad norm \(golden.grad_norm) (\(normErrorFP32)), loss \(golden.loss) (\(lossErrorFP32))")
            if let (firstLabel, first) = norms.first {
                #expect(abs(norm - first) / first <= 1e-6, "\(label): grad norm \(norm), \(firstLabel) \(first)")
            }
            norms.append((label, norm))
        }
        print("SmolLM2 first-step gradient norms:\n  " + report.joined(separator: "\n  "))
    }

    /// `--param-dtype bf16` (FSDP's param_dtype) on the real shapes — the 28M-element embedding's bf16
    /// all-gather, norm weights rounded too: the first step equals torch in float64 on the parameters
    /// rounded with `tensor.to(torch.bfloat16)` (golden.json "bf16_parameters_float64"), to the same
    /// tolerances as fp32 above (measured at 1 rank stage 0 and 2 ranks stage 3: norm 1.16e-6, loss
    /// 5.7e-7 relative), and is not fp32's (the rounding moves the loss by 7e-4 relative).
    @Test func bf16ParametersFirstStepEqualsTorchOnRoundedWeights() throws {
        guard let model = Self.modelPath() else { return }
        let golden = try JSONDecoder().decode(Golden.self, from: Data(contentsOf: Self.fixtures.appendingPathComponent("golden.json")))
        let exact = golden.bf16_parameters_float64
        let scratch = try ScratchDirectory()
        var report: [String] = []
        for (ranks, stage) in [(1, 0), (2, 3)] {
            let label = "bf16-n\(ranks)-stage\(stage)"
            let run = try TrainingRun.run(ranks: ranks, arguments: Self.arguments(model: model, stage: stage, steps: 1) + ["--param-dtype", "bf16"],
                                          in: scratch.url, label: label, saveModel: false)
            let norm = run.metrics[0]["grad_norm"] as! Double, loss = run.losses[0]
            let normError = abs(norm - exact.grad_norm) / exact.grad_norm, lossError = abs(loss - exact.loss) / exact.loss
            report.append(String(format: "%@: grad norm %.9f (torch float64, bf16 parameters %.9f: %.2e relative), loss %.9f (%.2e)",
                                 label, norm, exact.grad_norm, normError, loss, lossError))
            #expect(normError <= 2e-6, "\(label): grad norm \(norm), torch \(exact.grad_norm): \(normError) relative")
            #expect(lossError <= 1e-6, "\(label): loss \(loss), torch \(exact.loss): \(lossError) relative")
            #expect(abs(loss - golden.float64.loss) / golden.float64.loss > 1e-4, "\(label): loss \(loss) is fp32's \(golden.float64.loss)")
        }
        print("SmolLM2 first step, --param-dtype bf16:\n  " + report.joined(separator: "\n  "))
    }

    /// Three clipped steps (the norm, ~23, is far above the threshold 1, so every update depends on
    /// it): the losses agree across rank counts.
    @Test func threeClippedStepsGiveEqualLossesAtOneTwoAndFourRanks() throws {
        guard let model = Self.modelPath() else { return }
        let scratch = try ScratchDirectory()
        let runs = try [(1, 0), (2, 3), (4, 3)].map { ranks, stage in
            try TrainingRun.run(ranks: ranks, arguments: Self.arguments(model: model, stage: stage, steps: 3),
                                in: scratch.url, label: "n\(ranks)-stage\(stage)-3steps", saveModel: false)
        }
        let reference = runs[0].losses
        #expect(reference.count == 3)
        for (run, ranks) in zip(runs.dropFirst(), [2, 4]) {
            for (step, (a, b)) in zip(reference, run.losses).enumerated() {
                #expect(abs(a - b) / a <= 1e-6, "step \(step + 1): 1 rank \(a), \(ranks) ranks \(b): \(abs(a - b) / a) relative")
            }
        }
        print("SmolLM2 3 clipped steps, losses: " + runs.map { "\($0.losses)" }.joined(separator: " / "))
    }
}
