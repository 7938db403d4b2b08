import Checkpoints
import Foundation
import ModelIO
import TestSupport
import Testing

/// A checkpoint is a model: `--model OUTPUT_DIR/checkpoint-STEP` in eval, generate, export and train
/// gives what the HF directory exported from it gives, and the export is byte for byte the final model
/// that `train --output-dir` writes. A damaged checkpoint is refused naming the file.
@Suite(.serialized) struct CheckpointModelTests {
    static func run(_ arguments: [String], ranks: Int = MPIRun.withoutLauncher, timeout: Double = 180) throws
        -> (status: Int32, stdout: String, stderr: String)
    {
        try MPIRun.run(ranks: ranks, arguments: arguments, timeout: timeout)
    }

    /// Runs and expects exit 0; returns stdout.
    static func succeed(_ arguments: [String], ranks: Int = MPIRun.withoutLauncher, sourceLocation: SourceLocation = #_sourceLocation) throws -> String {
        let result = try run(arguments, ranks: ranks)
        #expect(result.status == 0, "zero-sft \(arguments.joined(separator: " ")) exited \(result.status):\n\(result.stderr)",
                sourceLocation: sourceLocation)
        return result.stdout
    }

    /// `text` without mpirun's own notices (blocks between two lines of dashes, untagged): mpirun can
    /// print one between two pieces of one line a rank wrote, which `perRank` would then join with
    /// the notice in the middle (seen: "Error: /tmp/…/" + notice + "flipped/rank-…").
    static func withoutLauncherNotices(_ text: String) -> String {
        text.replacing(/-{40,}\n[\s\S]*?-{40,}\n/, with: "")
    }

    /// Each rank's stderr from mpirun `--tag-output` text (`[JOB,RANK]<stderr>:` before every piece a rank wrote).
    static func perRank(_ tagged: String) -> [Int: String] {
        var streams: [Int: String] = [:]
        var rank: Int? = nil
        var rest = Substring(tagged)
        while let open = rest.firstIndex(of: "[") {
            if let rank { streams[rank, default: ""] += rest[..<open] }
            let tail = rest[open...]
            guard let close = tail.firstIndex(of: "]"), tail[close...].hasPrefix("]<stderr>:"),
                  let number = tail[tail.index(after: open)..<close].split(separator: ",").last.flatMap({ Int($0) }) else {
                if let rank { streams[rank, default: ""] += "[" }
                rest = rest[rest.index(after: open)...]
                continue
            }
            rank = number
            rest = tail[tail.index(close, offsetBy: "]<stderr>:".count)...]
        }
        if let rank { streams[rank, default: ""] += rest }
        return streams
    }

    /// The JSON object of stdout's last line.
    static func lastJSON(_ stdout: String) throws -> [String: Any] {
        let last = stdout.split(separator: "\n").last.map(String.init) ?? ""
        return (try JSONSerialization.jsonObject(with: Data(last.utf8)) as? [String: Any]) ?? [:]
    }

    /// The `loss` of each line of a metrics file.
    static func losses(_ url: URL) throws -> [Double] {
        try String(contentsOf: url, encoding: .utf8).split(separator: "\n").map {
            ((try JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any])?["loss"] as? Double) ?? .nan
        }
    }

    /// Pre-tokenized rows (ids below the tiny models' vocabularies: 128 for tiny-llama), `count` of them.
    static func tokenData(in scratch: ScratchDirectory, count: Int = 8) throws -> URL {
        let url = scratch.url.appendingPathComponent("tokens.jsonl")
        let lines = (0..<count).map { row -> String in
            let ids = (0..<(12 + row % 5)).map { (7 * $0 + 13 * row + 3) % 120 + 1 }
            let labels = ids.enumerated().map { $0.offset < 4 ? -100 : $0.element }
            return #"{"input_ids": \#(ids), "labels": \#(labels)}"#
        }
        try Data((lines + [""]).joined(separator: "\n").utf8).write(to: url)
        return url
    }

    /// The GGUF-started run every other test reads: tiny-llama.gguf (tokenizer in its metadata), 2 steps,
    /// a checkpoint after each, on 2 ranks at stage 3.
    static func trainedFromGGUF(in scratch: ScratchDirectory) throws -> (output: URL, data: URL) {
        let data = try tokenData(in: scratch)
        let output = scratch.url.appendingPathComponent("run")
        _ = try succeed(["train", "--model", Fixtures.url("tiny-llama/tiny-llama.gguf").path, "--data", data.path,
                         "--max-steps", "2", "--save-every", "1", "--micro-batch-size", "1", "--seq-len", "32", "--lr", "1e-2",
                         "--zero-stage", "3", "--output-dir", output.path], ranks: 2)
        return (output, data)
    }

    /// `export --model OUTPUT_DIR/checkpoint-N` writes exactly the bytes of the final model `train --output-dir`
    /// wrote after N steps (model.safetensors and config.json), from a preset on 2 ranks at stage 3.
    @Test func exportOfCheckpointEqualsFinalModel() throws {
        let scratch = try ScratchDirectory()
        let data = try Self.tokenData(in: scratch)
        let output = scratch.url.appendingPathComponent("run")
        _ = try Self.succeed(["train", "--model", "tiny", "--data", data.path, "--max-steps", "3", "--save-every", "2",
                              "--micro-batch-size", "1", "--seq-len", "32", "--lr", "1e-2", "--zero-stage", "3",
                              "--output-dir", output.path], ranks: 2)
        let exported = scratch.url.appendingPathComponent("exported")
        _ = try Self.succeed(["export", "--model", output.appendingPathComponent("checkpoint-3").path, "--out", exported.path])
        for name in ["model.safetensors", "config.json", "generation_config.json"] {
            let final = try Data(contentsOf: output.appendingPathComponent(name))
            let export = try Data(contentsOf: exported.appendingPathComponent(name))
            #expect(final == export, "\(name): the export of checkpoint-3 (\(export.count) bytes) differs from the final model (\(final.count) bytes)")
        }
        // checkpoint-2 is another model: the comparison above can fail.
        let earlier = scratch.url.appendingPathComponent("exported-2")
        _ = try Self.succeed(["export", "--model", output.appendingPathComponent("checkpoint-2").path, "--out", earlier.path])
        #expect(try Data(contentsOf: earlier.appendingPathComponent("model.safetensors"))
                != Data(contentsOf: output.appendingPathComponent("model.safetensors")))
    }

    /// A checkpoint of a GGUF-started run holds the model's files (config, tokenizer rebuilt from the GGUF
    /// metadata, generation config); eval (1 rank and 2 ranks at stage 3, which read only their ranges) and
    /// generate from it give exactly what they give from its HF export.
    @Test func checkpointEvaluatesAndGeneratesAsItsExport() throws {
        let scratch = try ScratchDirectory()
        let (output, data) = try Self.trainedFromGGUF(in: scratch)
        let checkpoint = output.appendingPathComponent("checkpoint-1")
        let files = Set(try FileManager.default.contentsOfDirectory(atPath: checkpoint.path))
        #expect(files.isSuperset(of: ["config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json"]), "\(files.sorted())")

        let exported = scratch.url.appendingPathComponent("exported")
        _ = try Self.succeed(["export", "--model", checkpoint.path, "--out", exported.path])
        for name in ["tokenizer.json", "tokenizer_config.json", "generation_config.json", "config.json"] {
            #expect(try Data(contentsOf: checkpoint.appendingPathComponent(name)) == Data(contentsOf: exported.appendingPathComponent(name)), "\(name)")
        }

        for (ranks, stage) in [(MPIRun.withoutLauncher, "0"), (2, "3")] {
            var losses: [Double] = []
            for model in [checkpoint, exported] {
                let json = try Self.lastJSON(try Self.succeed(["eval", "--model", model.path, "--data", data.path, "--zero-stage", stage], ranks: ranks))
                losses.append(json["loss"] as? Double ?? .nan)
            }
            #expect(losses[0] == losses[1] && losses[0].isFinite, "eval on \(ranks) rank(s), stage \(stage): checkpoint \(losses[0]), export \(losses[1])")
        }
        // The trained step moved the weights: checkpoint-1 and checkpoint-2 evaluate differently.
        let later = try Self.lastJSON(try Self.succeed(["eval", "--model", output.appendingPathComponent("checkpoint-2").path, "--data", data.path]))
        let first = try Self.lastJSON(try Self.succeed(["eval", "--model", checkpoint.path, "--data", data.path]))
        #expect((later["loss"] as? Double) != (first["loss"] as? Double))

        var replies: [[Int]] = []
        for model in [checkpoint, exported] {
            let json = try Self.lastJSON(try Self.succeed(["generate", "--model", model.path, "--prompt", "hello there", "--max-new-tokens", "12", "--json"]))
            replies.append(json["tokens"] as? [Int] ?? [])
        }
        #expect(replies[0] == replies[1] && !replies[0].isEmpty, "generate: checkpoint \(replies[0]), export \(replies[1])")
    }

    /// train from a checkpoint starts at step 0 with fresh AdamW moments: its losses equal, bitwise, those of
    /// training from the exported HF directory (step 2's loss depends on the moments of step 1).
    @Test func trainFromCheckpointStartsFresh() throws {
        let scratch = try ScratchDirectory()
        let (output, data) = try Self.trainedFromGGUF(in: scratch)
        let checkpoint = output.appendingPathComponent("checkpoint-1")
        let exported = scratch.url.appendingPathComponent("exported")
        _ = try Self.succeed(["export", "--model", checkpoint.path, "--out", exported.path])
        var runs: [[Double]] = []
        for (index, model) in [checkpoint, exported].enumerated() {
            let metrics = scratch.url.appendingPathComponent("metrics-\(index).jsonl")
            let out = scratch.url.appendingPathComponent("again-\(index)")
            let stdout = try Self.succeed(["train", "--model", model.path, "--data", data.path, "--max-steps", "2", "--micro-batch-size", "1",
                                           "--seq-len", "32", "--lr", "1e-2", "--zero-stage", "3", "--metrics-file", metrics.path,
                                           "--output-dir", out.path], ranks: 2)
            #expect(!stdout.contains("resuming"), "\(stdout)")
            #expect(stdout.contains("step 1/2"), "\(stdout)")
            runs.append(try Self.losses(metrics))
        }
        #expect(runs[0].count == 2 && runs[0] == runs[1], "losses from the checkpoint \(runs[0]), from its export \(runs[1])")
        // Its first loss is the checkpoint's eval loss on that batch (one example: the whole batch).
        let one = scratch.url.appendingPathComponent("one.jsonl")
        let firstLine = try String(contentsOf: data, encoding: .utf8).split(separator: "\n")[0]
        try Data((firstLine + "\n").utf8).write(to: one)
        let metrics = scratch.url.appendingPathComponent("metrics-one.jsonl")
        _ = try Self.succeed(["train", "--model", checkpoint.path, "--data", one.path, "--max-steps", "1", "--micro-batch-size", "1",
                              "--seq-len", "32", "--metrics-file", metrics.path])
        let trained = try Self.losses(metrics).first ?? .nan
        let evaluated = try Self.lastJSON(try Self.succeed(["eval", "--model", checkpoint.path, "--data", one.path]))["loss"] as? Double ?? .nan
        #expect(abs(trained - evaluated) <= 1e-5 * abs(evaluated), "first training loss \(trained), eval of the checkpoint \(evaluated)")
        // Not the resumed run: the checkpoint's own step 2 (moments carried) had another loss.
        let resumedLosses = try Self.losses(output.appendingPathComponent("checkpoint-2/metrics.jsonl"))
        #expect(resumedLosses.count == 2 && resumedLosses[1] != runs[0][0])
    }

    /// A damaged or incomplete checkpoint as --model, and an output directory in place of a checkpoint folder:
    /// an error naming the file (or the folders to pass instead) before any rank starts, on 1 and on 2 ranks.
    @Test func damagedCheckpointIsRefusedNamingTheFile() throws {
        let scratch = try ScratchDirectory()
        let (output, data) = try Self.trainedFromGGUF(in: scratch)
        func copy(_ name: String) throws -> URL {
            let url = scratch.url.appendingPathComponent(name)
            try FileManager.default.copyItem(at: output.appendingPathComponent("checkpoint-2"), to: url)
            return url
        }
        /// On several ranks every rank reports (each checks every file); their unbuffered stderr is interleaved by
        /// mpirun, so it runs with `--tag-output` and each rank's text is reassembled from its tagged pieces.
        func expectFailure(_ arguments: [String], ranks: Int = MPIRun.withoutLauncher, mentions fragments: [String],
                           sourceLocation: SourceLocation = #_sourceLocation) throws {
            let result = try MPIRun.run(ranks: ranks, arguments: arguments, launcherArguments: ranks > 0 ? ["--tag-output"] : [], timeout: 180)
            #expect(result.status != 0, "exited 0: \(arguments)", sourceLocation: sourceLocation)
            let streams = ranks > 0 ? Self.perRank(Self.withoutLauncherNotices(result.stderr)) : [0: result.stderr]
            #expect(streams.count == max(ranks, 1), "stderr of \(streams.count) rank(s):\n\(result.stderr)", sourceLocation: sourceLocation)
            for (rank, stderr) in streams.sorted(by: { $0.key < $1.key }) {
                for fragment in fragments {
                    #expect(stderr.contains(fragment), "rank \(rank)'s stderr lacks '\(fragment)':\n\(stderr)", sourceLocation: sourceLocation)
                }
            }
            #expect(!result.stdout.contains("step 1/"), "a rank started work:\n\(result.stdout)", sourceLocation: sourceLocation)
        }
        let shard = "rank-00001-of-00002.safetensors"

        // One flipped byte in exp_avg's data (a role a model never reads: only the checksum sees it).
        let flipped = try copy("flipped")
        let shardURL = flipped.appendingPathComponent(shard)
        let moments = try #require(try SafetensorsFile(url: shardURL).byteRange(of: "exp_avg"))
        var bytes = try Data(contentsOf: shardURL)
        bytes[moments.lowerBound + moments.count / 2] ^= 0x10
        try bytes.write(to: shardURL)
        try expectFailure(["eval", "--model", flipped.path, "--data", data.path], mentions: [shardURL.path, "checksum mismatch"])
        try expectFailure(["train", "--model", flipped.path, "--data", data.path, "--max-steps", "1", "--seq-len", "32"], ranks: 2,
                          mentions: [shardURL.path, "checksum mismatch"])
        try expectFailure(["export", "--model", flipped.path, "--out", scratch.url.appendingPathComponent("never").path],
                          mentions: [shardURL.path, "checksum mismatch"])
        #expect(!FileManager.default.fileExists(atPath: scratch.url.appendingPathComponent("never").path))

        let truncated = try copy("truncated")
        let truncatedURL = truncated.appendingPathComponent(shard)
        let full = try Data(contentsOf: truncatedURL)
        try full.prefix(full.count - 8).write(to: truncatedURL)
        try expectFailure(["generate", "--model", truncated.path, "--prompt", "hi"], mentions: [truncatedURL.path, "truncated file"])

        let incomplete = try copy("incomplete")
        try FileManager.default.removeItem(at: incomplete.appendingPathComponent(TrainingCheckpointFormat.completionMarkerName))
        try expectFailure(["eval", "--model", incomplete.path, "--data", data.path], mentions: [incomplete.path, "incomplete checkpoint"])

        // OUTPUT_DIR of a run that wrote checkpoints but (killed) no final model: not a model, the message says which folder is.
        let killed = scratch.url.appendingPathComponent("killed")
        try FileManager.default.createDirectory(at: killed, withIntermediateDirectories: true)
        for step in [1, 2] {
            try FileManager.default.copyItem(at: output.appendingPathComponent("checkpoint-\(step)"), to: killed.appendingPathComponent("checkpoint-\(step)"))
        }
        try expectFailure(["eval", "--model", killed.path, "--data", data.path],
                          mentions: [killed.path, "checkpoint-1, checkpoint-2", "name a checkpoint folder itself as --model",
                                     killed.appendingPathComponent("checkpoint-2").path])
    }

    /// In-process: the checkpoint's params through ``ModelSource`` are the values the shard files hold, and
    /// a flipped byte in any shard file is caught by ``CheckpointTensors`` on opening.
    @Test func checkpointSourceReadsTheSavedParameters() throws {
        let scratch = try ScratchDirectory()
        let (output, _) = try Self.trainedFromGGUF(in: scratch)
        let checkpoint = output.appendingPathComponent("checkpoint-2")
        let source = try ModelSource.open(checkpoint.path)
        guard case .checkpoint(let url) = source.kind else { Issue.record("kind \(source.kind)"); return }
        #expect(url.standardizedFileURL.path == checkpoint.standardizedFileURL.path)
        let reader = try CheckpointReader(directory: checkpoint)
        let weights = try #require(source.weights)
        for tensor in reader.manifest.tensors {
            let count = tensor.shape.reduce(1, *)
            var expected = [Float](repeating: .nan, count: count)
            try expected.withUnsafeMutableBufferPointer { try reader.read(role: "params", tensor: tensor.name, elements: 0..<count, into: $0) }
            #expect(try weights.read(tensor.name) == expected, "\(tensor.name)")
            // A range that straddles the two ranks' pieces.
            let range = (count / 3)..<(2 * count / 3 + 1)
            #expect(try weights.read(tensor.name, elements: range) == Array(expected[range]), "\(tensor.name) \(range)")
        }
    }

    /// What counts as a checkpoint folder: an HF Trainer checkpoint (its own `trainer_state.json` beside
    /// `model.safetensors`) is the HF directory it is; an output directory with checkpoint folders and no
    /// model is an error naming them and the latest complete one.
    @Test func whatIsACheckpointFolder() throws {
        let scratch = try ScratchDirectory()
        let hfTrainer = scratch.url.appendingPathComponent("hf-trainer/checkpoint-500")
        try FileManager.default.createDirectory(at: hfTrainer, withIntermediateDirectories: true)
        for name in ["config.json", "model.safetensors"] {
            try FileManager.default.copyItem(at: Fixtures.url("tiny-llama/\(name)"), to: hfTrainer.appendingPathComponent(name))
        }
        try Data(#"{"global_step": 500, "log_history": []}"#.utf8).write(to: hfTrainer.appendingPathComponent("trainer_state.json"))
        guard case .huggingFace = try ModelSource.open(hfTrainer.path).kind else { Issue.record("an HF Trainer checkpoint is an HF directory"); return }
        // With PyTorch pickles only, it is refused as such (not as an incomplete zero-sft checkpoint).
        try FileManager.default.removeItem(at: hfTrainer.appendingPathComponent("model.safetensors"))
        try Data().write(to: hfTrainer.appendingPathComponent("pytorch_model.bin"))
        #expect(throws: ModelSourceError.self) { _ = try ModelSource.open(hfTrainer.path) }

        let output = scratch.url.appendingPathComponent("out")
        for (step, complete) in [(2, true), (4, true), (6, false)] {
            let folder = output.appendingPathComponent("checkpoint-\(step)")
            try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
            try Data("{}".utf8).write(to: folder.appendingPathComponent(TrainingCheckpointFormat.manifestName))
            try Data().write(to: folder.appendingPathComponent(TrainingCheckpointFormat.shardName(rank: 0, ranks: 1)))
            if complete { try Data().write(to: folder.appendingPathComponent(TrainingCheckpointFormat.completionMarkerName)) }
        }
        do {
            _ = try ModelSource.open(output.path)
            Issue.record("an output directory opened as a model")
        } catch let error as ModelSourceError {
            #expect(error.path == output.path)
            #expect(error.message.contains("checkpoint-2, checkpoint-4, checkpoint-6"), "\(error)")
            #expect(error.message.contains("the latest complete one: \(output.appendingPathComponent("checkpoint-4").path)"), "\(error)")
        }
        // An incomplete checkpoint folder (no completion marker) says so, naming the folder.
        let incomplete = output.appendingPathComponent("checkpoint-6")
        do {
            _ = try ModelSource.open(incomplete.path)
            Issue.record("an incomplete checkpoint opened as a model")
        } catch let error as CheckpointError {
            #expect(error.kind == .incompleteCheckpoint && error.path == incomplete.path, "\(error)")
        }
    }
}
