import Checkpoints
import Foundation
import TestSupport
import Testing
import Training

/// Training checkpoints end to end (`train --save-every/--keep-last/--resume`): exact resume, resume
/// on other rank counts and stages, damaged files, incomplete checkpoints and leftover temporaries.
@Suite(.serialized) struct CheckpointResumeTests {
    static let common = ["train", "--model", "tiny", "--seq-len", "64", "--max-steps", "10", "--lr", "1e-3", "--warmup-steps", "2",
                         "--weight-decay", "0.1", "--clip-grad-norm", "1.0", "--seed", "5"]

    /// 8 rows per step for every rank count, as EquivalenceTests.
    static func layout(ranks: Int, stage: Int) -> [String] {
        let (micro, accumulation) = [1: (4, 2), 2: (2, 2), 4: (1, 2)][ranks]!
        return ["--zero-stage", "\(stage)", "--micro-batch-size", "\(micro)", "--grad-accum", "\(accumulation)"]
    }

    let scratch: ScratchDirectory
    let data: URL

    init() throws {
        scratch = try ScratchDirectory()
        data = scratch.url.appendingPathComponent("data.jsonl")
        try writeJSONL(syntheticExamples(count: 160, seed: 9), to: data)
    }

    func url(_ name: String) -> URL { scratch.url.appendingPathComponent(name) }

    @discardableResult
    func train(ranks: Int, stage: Int, _ arguments: [String], expectFailure: Bool = false) throws -> String {
        let result = try MPIRun.run(ranks: ranks == 1 ? MPIRun.withoutLauncher : ranks,
                                    arguments: Self.common + ["--data", data.path] + Self.layout(ranks: ranks, stage: stage) + arguments,
                                    timeout: 300)
        if expectFailure {
            #expect(result.status != 0, "expected a failure:\n\(result.stdout)\n\(result.stderr)")
        } else if result.status != 0 {
            throw TestFailure("zero-sft exited \(result.status)\nstdout:\n\(result.stdout)\nstderr:\n\(result.stderr)")
        }
        return result.stdout + result.stderr
    }

    func metrics(_ name: String) throws -> [[String: Any]] {
        try String(contentsOf: url(name), encoding: .utf8).split(separator: "\n")
            .map { try JSONSerialization.jsonObject(with: Data($0.utf8)) as! [String: Any] }
    }

    func parameters(_ directory: String) throws -> [String: [Float]] {
        let file = try SafetensorsFile(url: url(directory).appendingPathComponent("model.safetensors"))
        return try Dictionary(uniqueKeysWithValues: file.tensors.keys.map { ($0, try file.read($0)) })
    }

    /// N = 2, stage 3: 10 steps straight vs 5, a resume (`--resume latest` in a folder holding only
    /// checkpoint-5 and the first 5 metrics lines, as a killed job leaves it) and 5: the same losses
    /// and gradient norms bit for bit, the same exported bytes, each step once in the metrics file.
    @Test func sameRanksAndStageResumeBitwise() throws {
        try train(ranks: 2, stage: 3, ["--output-dir", url("straight").path, "--metrics-file", url("straight.jsonl").path, "--save-every", "5"])
        let straight = try metrics("straight.jsonl")
        #expect(straight.count == 10)
        // What a job killed after step 7 leaves: checkpoint-5 and metrics up to step 7.
        try FileManager.default.createDirectory(at: url("resumed"), withIntermediateDirectories: true)
        try FileManager.default.copyItem(at: url("straight/checkpoint-5"), to: url("resumed/checkpoint-5"))
        let lines = try String(contentsOf: url("straight.jsonl"), encoding: .utf8).split(separator: "\n").prefix(7)
        try (lines.joined(separator: "\n") + "\n").write(to: url("resumed.jsonl"), atomically: true, encoding: .utf8)
        let output = try train(ranks: 2, stage: 3, ["--output-dir", url("resumed").path, "--metrics-file", url("resumed.jsonl").path,
                                                    "--resume", "latest"])
        #expect(output.contains("resuming from \(url("resumed/checkpoint-5").path): step 5"), "\(output)")
        let resumed = try metrics("resumed.jsonl")
        #expect(resumed.map { $0["step"] as! Int } == Array(1...10), "steps in the metrics file: \(resumed.map { $0["step"] as! Int })")
        for (a, b) in zip(straight, resumed) {
            #expect(a["loss"] as! Double == b["loss"] as! Double && a["grad_norm"] as! Double == b["grad_norm"] as! Double,
                    "step \(a["step"]!): loss \(a["loss"]!) vs \(b["loss"]!), grad norm \(a["grad_norm"]!) vs \(b["grad_norm"]!)")
        }
        #expect(try metrics("resumed.jsonl.superseded").map { $0["step"] as! Int } == [6, 7])
        let a = try Data(contentsOf: url("straight/model.safetensors")), b = try Data(contentsOf: url("resumed/model.safetensors"))
        #expect(a == b, "the exported models differ")
        let c = try Data(contentsOf: url("straight/checkpoint-10/rank-00001-of-00002.safetensors"))
        let d = try Data(contentsOf: url("resumed/checkpoint-10/rank-00001-of-00002.safetensors"))
        #expect(c == d, "the final checkpoints differ")
        // A checkpoint is a model: `export` from it writes the live model's bytes, `eval` gives its loss.
        let exported = try MPIRun.run(ranks: MPIRun.withoutLauncher,
                                      arguments: ["export", "--model", url("straight/checkpoint-10").path, "--out", url("exported").path],
                                      timeout: 120)
        #expect(exported.status == 0, "\(exported.stdout)\(exported.stderr)")
        #expect(try Data(contentsOf: url("exported/model.safetensors")) == a, "export from the checkpoint differs from the live export")
        var losses: [String] = []
        for model in [url("straight/checkpoint-10"), url("straight")] {
            let eval = try MPIRun.run(ranks: MPIRun.withoutLauncher,
                                      arguments: ["eval", "--model", model.path, "--data", data.path, "--seq-len", "64"], timeout: 120)
            #expect(eval.status == 0, "\(eval.stdout)\(eval.stderr)")
            let last = eval.stdout.split(separator: "\n").last.map(String.init) ?? ""
            losses.append(String(describing: (try? JSONSerialization.jsonObject(with: Data(last.utf8)) as? [String: Any])?["loss"] ?? "none"))
        }
        #expect(losses[0] == losses[1] && losses[0] != "none", "eval of the checkpoint \(losses[0]), of the exported model \(losses[1])")
    }

    /// Evaluation during training across a resume: the resumed run replays the checkpoint's evaluation
    /// lines, so its later evaluations report the same loss and the same change since step 0 (the
    /// starting model's, measured by the first run) as the uninterrupted run, and step 0 is not re-scored.
    @Test func evaluationContinuesAcrossAResume() throws {
        let evalData = url("eval.jsonl")
        try writeJSONL(syntheticExamples(count: 12, seed: 21), to: evalData)
        let evaluation = ["--eval-data", "task=\(evalData.path)", "--eval-every", "2"]
        try train(ranks: 2, stage: 3, evaluation + ["--output-dir", url("straight").path, "--metrics-file", url("straight.jsonl").path,
                                                    "--save-every", "5"])
        try FileManager.default.createDirectory(at: url("resumed"), withIntermediateDirectories: true)
        try FileManager.default.copyItem(at: url("straight/checkpoint-5"), to: url("resumed/checkpoint-5"))
        try train(ranks: 2, stage: 3, evaluation + ["--output-dir", url("resumed").path, "--metrics-file", url("resumed.jsonl").path,
                                                    "--resume", "latest"])
        func evaluations(_ name: String) throws -> [(step: Int, loss: Double, delta: Double)] {
            try metrics(name).compactMap { line in
                guard let sets = line["eval"] as? [String: Any], let task = sets["task"] as? [String: Any] else { return nil }
                return (line["step"] as! Int, task["loss"] as! Double, task["delta_from_step_0"] as! Double)
            }
        }
        let straight = try evaluations("straight.jsonl"), resumed = try evaluations("resumed.jsonl")
        #expect(straight.map(\.step) == [0, 2, 4, 6, 8, 10], "\(straight.map(\.step))")
        #expect(resumed.map(\.step) == straight.map(\.step), "evaluation steps after the resume: \(resumed.map(\.step))")
        for (a, b) in zip(straight, resumed) {
            #expect(a.loss == b.loss && a.delta == b.delta, "step \(a.step): loss \(b.loss) (straight \(a.loss)), since step 0 \(b.delta) (straight \(a.delta))")
        }
    }

    /// A checkpoint of 4 ranks at stage 3 resumed on 2 ranks at stage 0, whose checkpoint resumed on
    /// 1 rank at stage 2: the losses and final parameters of the straight 4-rank run within the
    /// equivalence tolerances (losses 1e-6 relative, parameters 1e-6 absolute).
    @Test func otherRankCountsAndStagesResumeWithinTolerance() throws {
        try train(ranks: 4, stage: 3, ["--output-dir", url("n4").path, "--metrics-file", url("n4.jsonl").path, "--save-every", "3"])
        try train(ranks: 2, stage: 0, ["--output-dir", url("n2").path, "--metrics-file", url("n2.jsonl").path, "--save-every", "3",
                                       "--resume", url("n4/checkpoint-3").path])
        let output = try train(ranks: 1, stage: 2, ["--output-dir", url("n1").path, "--metrics-file", url("n1.jsonl").path,
                                                    "--resume", url("n2/checkpoint-6").path])
        #expect(output.contains("saved by 2 rank(s) at ZeRO stage 0"), "\(output)")
        let reference = try metrics("n4.jsonl"), middle = try metrics("n2.jsonl"), last = try metrics("n1.jsonl")
        #expect(middle.map { $0["step"] as! Int } == Array(1...10) && last.map { $0["step"] as! Int } == Array(1...10))
        for (index, expected) in reference.enumerated() {
            let a = expected["loss"] as! Double
            let b = (index < 6 ? middle : last)[index]["loss"] as! Double
            #expect(abs(a - b) <= 1e-6 * abs(a), "step \(index + 1): loss \(b), straight 4-rank run \(a)")
        }
        let straight = try parameters("n4"), resumed = try parameters("n1")
        #expect(Set(straight.keys) == Set(resumed.keys))
        var worst: Float = 0
        for (name, values) in straight { for (x, y) in zip(values, resumed[name] ?? []) { worst = max(worst, abs(x - y)) } }
        #expect(worst <= 1e-6, "final parameters differ by \(worst)")
        print("checkpoint resume 4 (stage 3) -> 2 (stage 0) -> 1 (stage 2): parameters within \(worst)")
    }

    /// A flipped byte and a short shard file: the resumed run fails before training, naming the file.
    @Test func damagedShardFilesAreNamed() throws {
        try train(ranks: 2, stage: 3, ["--output-dir", url("saved").path, "--max-steps", "2"])
        let shard = url("saved/checkpoint-2/rank-00001-of-00002.safetensors")
        var bytes = try Data(contentsOf: shard)
        bytes[bytes.count / 2] ^= 0x01
        try bytes.write(to: shard)
        var output = try train(ranks: 2, stage: 3, ["--output-dir", url("flipped").path, "--resume", url("saved/checkpoint-2").path],
                               expectFailure: true)
        #expect(output.contains("\(shard.path): checksum mismatch"), "\(output)")
        #expect(!output.contains("step 3/"), "trained despite a damaged checkpoint")
        try bytes.prefix(bytes.count - 100).write(to: shard)
        output = try train(ranks: 1, stage: 0, ["--output-dir", url("short").path, "--resume", url("saved/checkpoint-2").path],
                           expectFailure: true)
        #expect(output.contains("\(shard.path): truncated file"), "\(output)")
    }

    /// A disk that fills during a save (a 2 MB tmpfs: one tiny 2-rank checkpoint is 1.2 MB): the job
    /// ends non-zero naming the file and the failed write, and the previous checkpoint stays complete
    /// and resumable. Skipped where a tmpfs cannot be mounted (not root).
    @Test func aFullDiskLeavesThePreviousCheckpoint() throws {
        let mountPoint = url("small")
        try FileManager.default.createDirectory(at: mountPoint, withIntermediateDirectories: true)
        func command(_ arguments: [String]) throws -> Int32 {
            let process = Process()
            process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
            process.arguments = arguments
            process.standardOutput = FileHandle.nullDevice
            process.standardError = FileHandle.nullDevice
            try process.run()
            process.waitUntilExit()
            return process.terminationStatus
        }
        guard getuid() == 0, (try? command(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", mountPoint.path])) == 0 else {
            print("aFullDiskLeavesThePreviousCheckpoint: skipped (cannot mount a tmpfs here)")
            return
        }
        defer { _ = try? command(["umount", mountPoint.path]) }
        let run = mountPoint.appendingPathComponent("run")
        let output = try train(ranks: 2, stage: 3, ["--output-dir", run.path, "--max-steps", "3", "--save-every", "1"], expectFailure: true)
        #expect(output.contains("No space left on device") && output.contains(".safetensors") && output.contains("write failed"), "\(output)")
        let reader = try CheckpointReader(directory: run.appendingPathComponent("checkpoint-1"))
        for index in reader.manifest.shards.indices { try reader.verify(shard: index) }
        #expect(TrainingCheckpointDirectory.latest(in: run).latest?.step == 1)
        try train(ranks: 2, stage: 3, ["--output-dir", url("after-full").path, "--max-steps", "3",
                                       "--resume", run.appendingPathComponent("checkpoint-1").path])
    }

    /// `--resume latest` skips a checkpoint without its completion marker and says why; a temporary
    /// folder left by a killed save neither counts as content nor breaks a rerun, and the next save
    /// removes it; `--keep-last` keeps the newest complete checkpoints; a non-empty output directory
    /// without `--resume` is refused with the hint.
    @Test func latestTemporariesAndKeepLast() throws {
        let output = url("run")
        try FileManager.default.createDirectory(at: output.appendingPathComponent(".checkpoint-3.tmp-killed"), withIntermediateDirectories: true)
        try Data(repeating: 7, count: 1000).write(to: output.appendingPathComponent(".checkpoint-3.tmp-killed/rank-00000-of-00001.safetensors"))
        try train(ranks: 1, stage: 3, ["--output-dir", output.path, "--max-steps", "4", "--save-every", "1", "--keep-last", "2"])
        var names = try FileManager.default.contentsOfDirectory(atPath: output.path).sorted()
        #expect(names == ["checkpoint-3", "checkpoint-4", "config.json", "generation_config.json", "model.safetensors"], "\(names)")
        let refused = try train(ranks: 1, stage: 3, ["--output-dir", output.path, "--max-steps", "6"], expectFailure: true)
        #expect(refused.contains("pass --resume latest"), "\(refused)")
        try FileManager.default.removeItem(at: output.appendingPathComponent("checkpoint-4/COMPLETE"))
        let resumed = try train(ranks: 1, stage: 3, ["--output-dir", output.path, "--max-steps", "6", "--resume", "latest",
                                                   "--save-every", "1", "--keep-last", "2"])
        #expect(resumed.contains("skipping checkpoint-4: no completion marker"), "\(resumed)")
        #expect(resumed.contains("checkpoint-3: step 3"), "\(resumed)")
        names = try FileManager.default.contentsOfDirectory(atPath: output.path).filter { $0.hasPrefix("checkpoint-") || $0.hasPrefix(".") }.sorted()
        #expect(names == ["checkpoint-5", "checkpoint-6"], "\(names)")
    }
}
