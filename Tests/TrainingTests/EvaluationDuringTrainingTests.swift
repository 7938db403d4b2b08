import Foundation
import TestSupport
import Testing
import Training

/// `train --eval-data/--val-fraction/--eval-every/--early-stop`: the scores equal `zero-sft eval`'s, do not
/// depend on the rank count, and do not change training.
@Suite(.serialized) struct EvaluationDuringTrainingTests {
    static let common = ["--model", "tiny", "--seq-len", "64", "--lr", "1e-3", "--seed", "5", "--micro-batch-size", "2"]

    /// The files of a run: 96 training examples and a 24-example held set.
    static func files(_ scratch: ScratchDirectory) throws -> (data: URL, held: URL) {
        let data = scratch.url.appendingPathComponent("data.jsonl"), held = scratch.url.appendingPathComponent("held.jsonl")
        try writeJSONL(syntheticExamples(count: 96, seed: 9), to: data)
        try writeJSONL(syntheticExamples(count: 24, seed: 21), to: held)
        return (data, held)
    }

    static func record(_ evaluation: [String: Any], _ set: String) -> (loss: Double, supervised: Int)? {
        guard let sets = evaluation["eval"] as? [String: Any], let record = sets[set] as? [String: Any],
              let loss = record["loss"] as? Double, let supervised = record["supervised_tokens"] as? Int else { return nil }
        return (loss, supervised)
    }

    @Test("the step-0 score equals `zero-sft eval` of the starting model (1e-9 relative) at N = 1 and 3; scores agree across rank counts")
    func stepZeroEqualsEvalCommand() throws {
        let scratch = try ScratchDirectory()
        let (data, held) = try Self.files(scratch)
        let arguments = Self.common + ["--data", data.path, "--max-steps", "4", "--eval-data", "held=\(held.path)", "--eval-every", "2"]
        var runs: [Int: TrainingRun] = [:]
        for ranks in [1, 3] {
            // The same rows per step (ranks × accumulation = 3), so N = 1 and N = 3 train alike.
            let run = try TrainingRun.run(ranks: ranks, arguments: arguments + ["--grad-accum", "\(3 / ranks)"], in: scratch.url,
                                          label: "ranks\(ranks)", saveModel: false)
            runs[ranks] = run
            #expect(run.evaluations.map { $0["step"] as? Int } == [0, 2, 4], "N = \(ranks): evaluations at \(run.evaluations.map { $0["step"] ?? "?" })")
            #expect(run.stdout.contains("eval step 0 | held loss "), "N = \(ranks): no eval line:\n\(run.stdout.prefix(1500))")
            guard let step0 = run.evaluations.first.flatMap({ Self.record($0, "held") }) else {
                Issue.record("N = \(ranks): no step-0 record of held")
                continue
            }
            // `zero-sft eval` with training's forward size (micro-batch × seq-len) and the same initialisation seed.
            let eval = try MPIRun.run(ranks: ranks, arguments: ["eval", "--model", "tiny", "--seed", "5", "--data", held.path,
                                                                 "--seq-len", "64", "--tokens-per-forward", "128"], timeout: 300)
            #expect(eval.status == 0, "eval exited \(eval.status): \(eval.stderr)")
            guard let line = eval.stdout.split(separator: "\n").last(where: { $0.hasPrefix("{") }),
                  let json = try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any],
                  let loss = json["loss"] as? Double, let supervised = json["supervised_tokens"] as? Int else {
                Issue.record("N = \(ranks): no JSON line from eval:\n\(eval.stdout)")
                continue
            }
            #expect(abs(step0.loss - loss) <= 1e-9 * abs(loss), "N = \(ranks): step 0 \(step0.loss), zero-sft eval \(loss)")
            print("evaluation N = \(ranks): step 0 vs zero-sft eval, relative difference \(abs(step0.loss - loss) / abs(loss))")
            #expect(step0.supervised == supervised)
            let deltas = run.evaluations.compactMap { (($0["eval"] as? [String: Any])?["held"] as? [String: Any])?["delta_from_step_0"] as? Double }
            let losses = run.evaluations.compactMap { Self.record($0, "held")?.loss }
            #expect(zip(deltas, losses).allSatisfy { abs($0 - ($1 - step0.loss)) <= 1e-12 } && deltas.count == 3,
                    "N = \(ranks): delta_from_step_0 \(deltas)")
        }
        guard let one = runs[1], let three = runs[3] else { return }
        let a = one.evaluations.compactMap { Self.record($0, "held")?.loss }, b = three.evaluations.compactMap { Self.record($0, "held")?.loss }
        #expect(a.count == 3 && b.count == 3)
        for (step, (x, y)) in zip(a, b).enumerated() {
            // Training's equivalence tolerance (EquivalenceTests): N = 3 sums in another order.
            #expect(abs(x - y) <= 1e-6 * abs(x), "evaluation \(step): N = 1 \(x), N = 3 \(y)")
        }
        print("evaluation N = 1 vs N = 3: largest relative difference \(zip(a, b).map { abs($0 - $1) / abs($0) }.max() ?? 0)")
    }

    @Test("evaluating every step leaves the training losses and final parameters bitwise unchanged", arguments: [(1, 0), (2, 3)])
    func evaluationDoesNotChangeTraining(ranks: Int, stage: Int) throws {
        let scratch = try ScratchDirectory()
        let (data, held) = try Self.files(scratch)
        let arguments = Self.common + ["--data", data.path, "--max-steps", "5", "--zero-stage", "\(stage)", "--grad-accum", "2"]
        let plain = try TrainingRun.run(ranks: ranks, arguments: arguments, in: scratch.url, label: "plain")
        let evaluated = try TrainingRun.run(ranks: ranks, arguments: arguments + ["--eval-data", "held=\(held.path)", "--eval-every", "1"],
                                            in: scratch.url, label: "evaluated")
        #expect(plain.evaluations.isEmpty)
        #expect(evaluated.evaluations.count == 6)
        #expect(evaluated.losses == plain.losses, "N = \(ranks), stage \(stage): losses \(evaluated.losses) vs \(plain.losses)")
        #expect(evaluated.metrics.map { $0["grad_norm"] as? Double } == plain.metrics.map { $0["grad_norm"] as? Double })
        #expect(evaluated.parameters == plain.parameters, "N = \(ranks), stage \(stage): final parameters differ")
    }

    @Test("ValidationSplit: round(F × n) held out, disjoint, every example kept once, the same on every call; the seed changes it")
    func validationSplitIsDeterministic() throws {
        let examples = syntheticExamples(count: 200, seed: 3)
        let (training, validation) = try ValidationSplit.split(examples, fraction: 0.15, seed: 7)
        #expect(validation.count == 30 && training.count == 170)
        let again = try ValidationSplit.split(examples, fraction: 0.15, seed: 7)
        #expect(again.training == training && again.validation == validation)
        // Disjoint and complete: by position in the file.
        var remaining = examples[...]
        var fromTraining = 0, fromValidation = 0
        while let example = remaining.popFirst() {
            if fromTraining < training.count, training[fromTraining] == example { fromTraining += 1 }
            else if fromValidation < validation.count, validation[fromValidation] == example { fromValidation += 1 }
            else { Issue.record("example \(examples.count - remaining.count - 1) is in neither part (or out of order)") }
        }
        #expect(fromTraining == 170 && fromValidation == 30)
        let other = try ValidationSplit.split(examples, fraction: 0.15, seed: 8)
        #expect(other.validation != validation, "the seed does not change the split")
        #expect(throws: OptionError.self) { try ValidationSplit.split(examples, fraction: 1, seed: 7) }
        #expect(throws: OptionError.self) { try ValidationSplit.split(Array(examples.prefix(1)), fraction: 0.5, seed: 7) }
    }

    @Test("--val-fraction: the same `val` in two runs and on 1 or 2 ranks, never trained on (training equals a run on the rest)")
    func validationFractionHoldsOut() throws {
        let scratch = try ScratchDirectory()
        let (data, _) = try Self.files(scratch)
        let arguments = Self.common + ["--data", data.path, "--max-steps", "4", "--val-fraction", "0.25", "--eval-every", "2"]
        let first = try TrainingRun.run(ranks: 2, arguments: arguments, in: scratch.url, label: "first", saveModel: false)
        let second = try TrainingRun.run(ranks: 2, arguments: arguments, in: scratch.url, label: "second", saveModel: false)
        let firstVal = first.evaluations.compactMap { Self.record($0, "val") }, secondVal = second.evaluations.compactMap { Self.record($0, "val") }
        #expect(firstVal.count == 3)
        #expect(firstVal.map(\.loss) == secondVal.map(\.loss) && firstVal.map(\.supervised) == secondVal.map(\.supervised))
        #expect(first.losses == second.losses)
        #expect(first.stdout.contains("eval set val: 24 examples (held out from --data)"), "\(first.stdout.prefix(1200))")
        // The rest of the file, written out by the library's split, trains exactly as --val-fraction does.
        let split = try ValidationSplit.split(syntheticExamples(count: 96, seed: 9), fraction: 0.25, seed: 5)
        let rest = scratch.url.appendingPathComponent("rest.jsonl"), heldOut = scratch.url.appendingPathComponent("val.jsonl")
        try writeJSONL(split.training, to: rest)
        try writeJSONL(split.validation, to: heldOut)
        let explicit = try TrainingRun.run(
            ranks: 2, arguments: Self.common + ["--data", rest.path, "--max-steps", "4", "--eval-data", "heldout=\(heldOut.path)", "--eval-every", "2"],
            in: scratch.url, label: "explicit", saveModel: false)
        #expect(explicit.losses == first.losses, "training with --val-fraction differs from training on the rest of the file")
        #expect(explicit.evaluations.compactMap { Self.record($0, "heldout")?.loss } == firstVal.map(\.loss))
        // One rank: the same split (the scores agree to the equivalence tolerance).
        let single = try TrainingRun.run(ranks: 1, arguments: arguments, in: scratch.url, label: "single", saveModel: false)
        let singleVal = single.evaluations.compactMap { Self.record($0, "val") }
        #expect(singleVal.map(\.supervised) == firstVal.map(\.supervised))
        #expect(abs(singleVal[0].loss - firstVal[0].loss) <= 1e-9 * firstVal[0].loss)
    }

    @Test("--early-stop: a set that only gets worse stops the run after PATIENCE evaluations; the model is still saved")
    func earlyStop() throws {
        let scratch = try ScratchDirectory()
        let (data, _) = try Self.files(scratch)
        // Uniformly random tokens: the starting model's near-uniform prediction is the best it will get.
        var random = TestRandom(seed: 13)
        let noise = (0..<20).map { _ in
            let ids = (0..<30).map { _ in Int32(random.next() % 256) }
            return SFTExample(inputIDs: ids, labels: ids)
        }
        let noiseURL = scratch.url.appendingPathComponent("noise.jsonl")
        try writeJSONL(noise, to: noiseURL)
        let run = try TrainingRun.run(
            ranks: 2, arguments: Self.common + ["--data", data.path, "--max-steps", "40", "--lr", "3e-3", "--eval-every", "2",
                                                "--eval-data", "noise=\(noiseURL.path)", "--early-stop", "2"],
            in: scratch.url, label: "early")
        let steps = run.evaluations.compactMap { $0["step"] as? Int }
        let losses = run.evaluations.compactMap { Self.record($0, "noise")?.loss }
        #expect(steps.count >= 3 && steps.last.map { $0 < 40 } == true, "evaluations at \(steps)")
        // The last two evaluations did not improve on the best before them.
        if losses.count >= 3 {
            let best = losses.dropLast(2).min()!
            #expect(losses.suffix(2).allSatisfy { $0 >= best }, "losses \(losses)")
        }
        #expect(run.stdout.contains("early stop at step \(steps.last ?? -1): noise loss has not improved"), "\(run.stdout.suffix(1200))")
        #expect(!run.parameters.isEmpty)
    }

    @Test("bad evaluation options are refused before training, naming the option, set or file")
    func badOptions() throws {
        let scratch = try ScratchDirectory()
        let (data, held) = try Self.files(scratch)
        let base = Self.common + ["--data", data.path, "--max-steps", "2"]
        let missing = scratch.url.appendingPathComponent("missing.jsonl").path
        let cases: [([String], [String])] = [
            (["--eval-data", "gone=\(missing)"], ["gone", missing]),
            (["--eval-data", "a=\(held.path)", "--eval-data", "a=\(data.path)"], ["\"a\" is given twice"]),
            (["--eval-data", held.path], ["expected NAME=PATH"]),
            (["--eval-data", "a b=\(held.path)"], ["\"a b\""]),
            (["--val-fraction", "0.2", "--eval-data", "val=\(held.path)"], ["\"val\"", "--val-fraction"]),
            (["--val-fraction", "1.5"], ["--val-fraction must be in (0, 1)"]),
            (["--eval-every", "2"], ["--eval-every needs a set"]),
            (["--val-fraction", "0.2", "--early-stop", "2"], ["--early-stop needs --eval-every"]),
            (["--val-fraction", "0.2", "--eval-every", "0"], ["--eval-every must be at least 1"]),
            (["--val-fraction", "0.2", "--eval-every", "2", "--early-stop", "-1"], ["--early-stop must be at least 1 (got -1)"]),
        ]
        for (extra, expected) in cases {
            let result = try MPIRun.run(ranks: MPIRun.withoutLauncher, arguments: ["train"] + base + extra, timeout: 120)
            let output = result.stdout + result.stderr
            #expect(result.status != 0, "\(extra) was accepted")
            for text in expected { #expect(output.contains(text), "\(extra): no \"\(text)\" in\n\(output)") }
            #expect(!output.contains("step 1/"), "\(extra): training started")
        }
    }
}
