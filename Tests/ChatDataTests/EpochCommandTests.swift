import Foundation
import TestSupport
import Testing
import Training

/// `train --epochs`: the step count printed at start, run, and spanned by the learning-rate schedule.
extension CommandTests {
    @Test func epochsSetTheStepsAndTheScheduleSpansThemAll() throws {
        let scratch = try Scratch()
        var lines = ""
        for index in 0..<40 {
            let length = 6 + (index * 7) % 30
            let ids = (0..<length).map { ($0 * 5 + index) % 250 }
            lines += "{\"input_ids\": \(ids), \"labels\": \(ids.enumerated().map { $0.offset < length / 2 ? -100 : $0.element })}\n"
        }
        let data = try scratch.file("data.jsonl", lines)
        let metrics = scratch.url.appendingPathComponent("metrics.jsonl")
        let result = try MPIRun.run(ranks: MPIRun.withoutLauncher, arguments: [
            "train", "--model", "tiny", "--data", data.path, "--epochs", "3", "--seq-len", "64", "--micro-batch-size", "2",
            "--lr", "1e-3", "--min-lr", "1e-4", "--warmup-steps", "2", "--metrics-file", metrics.path,
        ], timeout: 300)
        #expect(result.status == 0, "\(result.stdout)\n\(result.stderr)")
        // "plan: 27 steps × 2 rows of 64 (…); 3 epochs of 9, 9, 9 steps"
        let plan = try #require(result.stdout.split(separator: "\n").first { $0.contains("plan: ") }, "\(result.stdout)")
        let epochs = try #require(plan.range(of: "3 epochs of "), "\(plan)")
        let listed = plan[epochs.upperBound...].prefix { $0 != "s" }  // "9, 9, 9 "
        let counts = listed.split(separator: ",").compactMap { Int($0.trimmingCharacters(in: .whitespaces)) }
        #expect(counts.count == 3 && counts.allSatisfy { $0 > 0 }, "\(plan)")
        let total = counts.reduce(0, +)
        #expect(plan.contains("plan: \(total) steps"), "\(plan)")
        let steps = try String(contentsOf: metrics, encoding: .utf8).split(separator: "\n").map {
            try JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any] ?? [:]
        }
        #expect(steps.count == total)
        let schedule = LearningRateSchedule(peak: 1e-3, warmupSteps: 2, totalSteps: total, minimum: 1e-4)
        for (step, line) in steps.enumerated() {
            let lr = line["lr"] as? Double ?? -1
            #expect(abs(lr - schedule.rate(at: step)) < 1e-15, "step \(step): lr \(lr), expected \(schedule.rate(at: step))")
        }
        // The decay reaches the minimum only at the end of the last epoch.
        #expect((steps.last?["lr"] as? Double ?? 0) > 1e-4 && (steps.last?["lr"] as? Double ?? 1) < 1.1e-4)

        let both = try Self.run(["train", "--model", "tiny", "--data", data.path, "--epochs", "2", "--max-steps", "5"])
        #expect(both.status != 0 && both.stderr.contains("--max-steps 5 and --epochs 2 both set the run's length"), "\(both.stderr)")
    }
}
