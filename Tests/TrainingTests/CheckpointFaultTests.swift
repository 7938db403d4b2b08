import Checkpoints
import Foundation
import TestSupport
import Testing
import Training

/// `kill -9` of a rank at a chosen point (the test hook `ZERO_SFT_FAULT=RANK:PHASE:STEP`,
/// ``FaultInjection``): what it leaves on disk and that `--resume latest` continues exactly.
/// `launch/fault-matrix` runs every rank and phase; this suite the case issue 9 names.
@Suite(.serialized) struct CheckpointFaultTests {
    static let common = ["train", "--model", "tiny", "--seq-len", "64", "--max-steps", "6", "--lr", "1e-3", "--warmup-steps", "2",
                         "--weight-decay", "0.1", "--seed", "5", "--zero-stage", "3", "--micro-batch-size", "2", "--grad-accum", "2",
                         "--save-every", "2"]

    let scratch: ScratchDirectory
    let data: URL

    init() throws {
        scratch = try ScratchDirectory()
        data = scratch.url.appendingPathComponent("data.jsonl")
        try writeJSONL(syntheticExamples(count: 160, seed: 9), to: data)
    }

    func url(_ name: String) -> URL { scratch.url.appendingPathComponent(name) }

    func train(_ name: String, ranks: Int = 2, resume: Bool = false, fault: String? = nil) throws -> (status: Int32, output: String) {
        let arguments = Self.common + ["--data", data.path, "--output-dir", url(name).path, "--metrics-file", url(name + ".jsonl").path]
            + (resume ? ["--resume", "latest"] : [])
        let result = try MPIRun.run(ranks: ranks, arguments: arguments, environment: fault.map { [FaultInjection.variable: $0] } ?? [:],
                                    timeout: 120)
        return (result.status, result.stdout + result.stderr)
    }

    func metrics(_ name: String) throws -> [[String: Any]] {
        try String(contentsOf: url(name + ".jsonl"), encoding: .utf8).split(separator: "\n")
            .map { try JSONSerialization.jsonObject(with: Data($0.utf8)) as! [String: Any] }
    }

    /// SIGKILL of rank 1 midway through its shard file of checkpoint-4 (2 ranks, stage 3, `--save-every 2`):
    /// the job ends non-zero, checkpoint-2 stays complete (its files' checksums hold), no checkpoint-4
    /// appears, only a temporary folder; `--resume latest` skips the temporary, resumes from checkpoint-2,
    /// removes the temporary at its next save and finishes with the uninterrupted run's losses, gradient
    /// norms and exported model bit for bit.
    @Test func aKillDuringASaveLeavesThePreviousCheckpointResumable() throws {
        let straight = try train("straight")
        #expect(straight.status == 0, "\(straight.output)")

        let killed = try train("run", fault: "1:save:4")
        #expect(killed.status != 0, "the job whose rank 1 was killed exited 0:\n\(killed.output)")
        #expect(killed.output.contains("rank 1 kills itself (SIGKILL) at save of step 4"), "\(killed.output)")
        let run = url("run")
        let names = try FileManager.default.contentsOfDirectory(atPath: run.path).sorted()
        #expect(names.filter { $0.hasPrefix("checkpoint-") } == ["checkpoint-2"], "\(names)")
        let temporaries = TrainingCheckpointDirectory.temporaries(in: run).map(\.lastPathComponent)
        #expect(temporaries.count == 1 && temporaries.allSatisfy { $0.hasPrefix(".checkpoint-4.tmp-") }, "\(names)")
        let reader = try CheckpointReader(directory: run.appendingPathComponent("checkpoint-2"))
        for index in reader.manifest.shards.indices { try reader.verify(shard: index) }
        let (latest, _) = TrainingCheckpointDirectory.latest(in: run)
        #expect(latest?.step == 2, "latest: \(String(describing: latest))")

        let resumed = try train("run", resume: true)
        #expect(resumed.status == 0, "\(resumed.output)")
        #expect(resumed.output.contains("resuming from \(run.appendingPathComponent("checkpoint-2").path): step 2"), "\(resumed.output)")
        #expect(TrainingCheckpointDirectory.temporaries(in: run).isEmpty, "the next save did not remove the temporary")
        let a = try metrics("straight"), b = try metrics("run")
        #expect(b.map { $0["step"] as! Int } == Array(1...6), "steps in the metrics file: \(b.map { $0["step"] as! Int })")
        #expect(a.count == 6)
        for (x, y) in zip(a, b) {
            #expect(x["loss"] as! Double == y["loss"] as! Double && x["grad_norm"] as! Double == y["grad_norm"] as! Double,
                    "step \(x["step"]!): loss \(y["loss"]!) (uninterrupted \(x["loss"]!)), grad norm \(y["grad_norm"]!) (\(x["grad_norm"]!))")
        }
        let model = "model.safetensors"
        #expect(try Data(contentsOf: url("straight").appendingPathComponent(model)) == Data(contentsOf: run.appendingPathComponent(model)),
                "the resumed run's model differs from the uninterrupted run's")
    }

    /// A malformed `ZERO_SFT_FAULT` is an error naming the variable before any step; RANK:PHASE:STEP parses.
    @Test func malformedFaultIsNamed() throws {
        let result = try train("bad", ranks: MPIRun.withoutLauncher, fault: "1:saving:4")
        #expect(result.status != 0, "\(result.output)")
        #expect(result.output.contains("ZERO_SFT_FAULT=1:saving:4: expected RANK:PHASE:STEP"), "\(result.output)")
        #expect(!result.output.contains("step 1/"), "trained despite the malformed value")
        #expect(try FaultInjection(parsing: "1:save:4") == FaultInjection(rank: 1, phase: .save, step: 4))
        for bad in ["", "1:save", "-1:save:4", "1:save:0", "a:save:4", "1:save:4:5"] {
            #expect(throws: OptionError.self, "\(bad)") { try FaultInjection(parsing: bad) }
        }
        #expect(try FaultInjection.fromEnvironment([:]) == nil)
    }
}
