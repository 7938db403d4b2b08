import Foundation
import TestSupport
import Testing
import Training

/// N-rank runs at every stage against the 1-rank stage-0 run, from the same seed and data.
///
/// Tolerances (stated in docs/testing.md): losses 1e-6 relative per step; final parameters 1e-6
/// absolute (lr 1e-3 over 10 steps; the reduction order differs with the number of ranks, and
/// AdamW's normalisation can turn a rounding-level gradient difference into an update difference).
@Suite(.serialized) struct EquivalenceTests {
    static let common = ["--model", "tiny", "--seq-len", "64", "--max-steps", "10", "--lr", "1e-3", "--warmup-steps", "2",
                         "--weight-decay", "0.1", "--clip-grad-norm", "1.0", "--seed", "5"]

    /// 8 rows per step everywhere: ranks × micro-batch size × accumulation = 8.
    /// `inFlight`: `--reductions-in-flight` (nil: the default, 2): 1 makes every release wait for
    /// the previous ring, 8 lets the whole backward's rings overlap.
    static let cases: [(ranks: Int, stage: Int, microBatch: Int, accumulation: Int, inFlight: Int?)] = [
        (1, 0, 1, 8, nil),
        (1, 3, 8, 1, nil),
        (2, 0, 2, 2, nil), (2, 1, 2, 2, nil), (2, 2, 2, 2, nil), (2, 3, 2, 2, nil), (2, 3, 2, 2, 8),
        (4, 0, 1, 2, nil), (4, 1, 1, 2, nil), (4, 2, 1, 2, nil), (4, 2, 1, 2, 1), (4, 3, 2, 1, nil),
        (3, 3, 1, 1, nil),  // 3 rows per step: compared with its own 1-rank run below
    ]

    @Test func everyStageAndRankCountMatchesOneRank() throws {
        let scratch = try ScratchDirectory()
        let data = scratch.url.appendingPathComponent("data.jsonl")
        try writeJSONL(syntheticExamples(count: 160, seed: 9), to: data)
        let reference = try TrainingRun.run(ranks: 1, arguments: Self.common + ["--data", data.path, "--zero-stage", "0",
                                                                                  "--micro-batch-size", "8", "--grad-accum", "1"],
                                            in: scratch.url, label: "reference")
        #expect(reference.losses.count == 10)
        #expect(reference.losses.last! < reference.losses.first!, "the loss did not fall: \(reference.losses)")
        for c in Self.cases where c.ranks != 3 {
            let label = "n\(c.ranks)-stage\(c.stage)-mbs\(c.microBatch)-accum\(c.accumulation)" + (c.inFlight.map { "-inflight\($0)" } ?? "")
            let run = try TrainingRun.run(
                ranks: c.ranks,
                arguments: Self.common + ["--data", data.path, "--zero-stage", "\(c.stage)",
                                          "--micro-batch-size", "\(c.microBatch)", "--grad-accum", "\(c.accumulation)"]
                    + (c.inFlight.map { ["--reductions-in-flight", "\($0)"] } ?? []),
                in: scratch.url, label: label)
            compare(run, reference, label: label)
        }
        // An odd rank count (the padding of every unit is exercised) against 1 rank with the same 3 rows per step.
        let odd = try TrainingRun.run(ranks: 3, arguments: Self.common + ["--data", data.path, "--zero-stage", "3", "--micro-batch-size", "1"],
                                      in: scratch.url, label: "n3-stage3")
        let oddReference = try TrainingRun.run(ranks: 1, arguments: Self.common + ["--data", data.path, "--zero-stage", "0",
                                                                                     "--micro-batch-size", "3"],
                                               in: scratch.url, label: "n1-stage0-mbs3")
        compare(odd, oddReference, label: "n3-stage3")
    }

    func compare(_ run: TrainingRun, _ reference: TrainingRun, label: String) {
        #expect(run.losses.count == reference.losses.count, "\(label): \(run.losses.count) steps")
        for (step, (a, b)) in zip(run.losses, reference.losses).enumerated() {
            #expect(abs(a - b) <= 1e-6 * abs(b), "\(label): step \(step + 1) loss \(a), reference \(b) (relative \(abs(a - b) / abs(b)))")
        }
        #expect(Set(run.parameters.keys) == Set(reference.parameters.keys), "\(label): different tensors saved")
        let worst = run.largestParameterDifference(from: reference, label: label)
        #expect(worst.difference <= 1e-6, "\(label): final parameters differ by \(worst.difference) in \(worst.name)")
        let lossDifference = zip(run.losses, reference.losses).map { abs($0 - $1) / abs($1) }.max() ?? 0
        print("equivalence \(label): largest loss difference \(lossDifference) relative, parameters \(worst.difference) absolute")
    }
}
