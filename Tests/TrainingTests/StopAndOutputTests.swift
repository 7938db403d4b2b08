import Checkpoints
import Foundation
import TestSupport
import Testing
import Training

#if canImport(Glibc)
import Glibc
#endif

/// Issue 9, parts 5, 6 and 8, as a user meets them through the built binary: SIGTERM/SIGINT stop every
/// rank at a step boundary, save and exit 143/130; bad destinations and out-of-range numbers fail
/// before step 1 and leave the user's files byte for byte as they were; a full disk mid-run names the
/// file and the operation.
@Suite(.serialized) struct StopAndOutputTests {
    /// 200 pre-tokenized examples (vocabulary 256), prompt unsupervised.
    static func data(in scratch: ScratchDirectory) throws -> URL {
        let url = scratch.url.appendingPathComponent("data.jsonl")
        let lines = syntheticExamples(count: 200, seed: 9).map { example in
            #"{"input_ids": \#(example.inputIDs), "labels": \#(example.labels)}"#
        }
        try Data((lines.joined(separator: "\n") + "\n").utf8).write(to: url)
        return url
    }

    static func run(_ arguments: [String], ranks: Int = MPIRun.withoutLauncher) throws -> (status: Int32, stdout: String, stderr: String) {
        try MPIRun.run(ranks: ranks, arguments: arguments, timeout: 120)
    }

    /// Every file under `url` (or `url` itself) with its bytes.
    static func snapshot(_ url: URL) throws -> [String: Data] {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: url.path, isDirectory: &isDirectory) else { return [:] }
        guard isDirectory.boolValue else { return [url.path: try Data(contentsOf: url)] }
        var files: [String: Data] = [:]
        for name in try FileManager.default.contentsOfDirectory(atPath: url.path) {
            files.merge(try snapshot(url.appendingPathComponent(name))) { $1 }
        }
        return files
    }

    /// Runs `arguments`, expects a non-zero exit before step 1 naming every fragment, no trap, no
    /// Foundation dump, and `protected` unchanged byte for byte.
    static func expectRefusal(_ arguments: [String], mentions fragments: [String], protecting protected: [URL] = [],
                              sourceLocation: SourceLocation = #_sourceLocation) throws {
        let before = try protected.map(snapshot)
        let result = try run(arguments)
        let command = arguments.joined(separator: " ")
        #expect(result.status != 0 && result.status < 128, "\(command): status \(result.status)\n\(result.stderr)", sourceLocation: sourceLocation)
        #expect(!result.stdout.contains("step 1/"), "\(command) trained:\n\(result.stdout)", sourceLocation: sourceLocation)
        for fragment in fragments {
            #expect(result.stderr.contains(fragment), "\(command): stderr lacks '\(fragment)':\n\(result.stderr)", sourceLocation: sourceLocation)
        }
        #expect(!result.stderr.contains("NSCocoaErrorDomain") && !result.stderr.contains("Fatal error"), "\(result.stderr)",
                sourceLocation: sourceLocation)
        for (url, snapshot) in zip(protected, before) {
            #expect(try Self.snapshot(url) == snapshot, "\(command) changed \(url.path)", sourceLocation: sourceLocation)
        }
    }

    // MARK: - Part 6: outputs checked before any rank starts work

    /// `--metrics-file data.jsonl` truncated the data file; any spelling of an input (a link, a hard
    /// link, a file of the model directory) is refused, compared by device and inode.
    @Test func metricsFileIsNeverAnInput() throws {
        let scratch = try ScratchDirectory()
        let data = try Self.data(in: scratch)
        let symbolic = scratch.url.appendingPathComponent("link.jsonl")
        try FileManager.default.createSymbolicLink(at: symbolic, withDestinationURL: data)
        let hard = scratch.url.appendingPathComponent("hard.jsonl")
        try FileManager.default.linkItem(at: data, to: hard)
        let base = ["train", "--model", "tiny", "--data", data.path, "--max-steps", "2", "--seq-len", "64"]
        for metrics in [data.path, symbolic.path, hard.path, scratch.url.appendingPathComponent("./data.jsonl").path] {
            try Self.expectRefusal(base + ["--metrics-file", metrics], mentions: ["--metrics-file \(metrics) is the input"], protecting: [data])
        }
        let model = try CommandTestsModel.copy(into: scratch)
        let config = model.appendingPathComponent("config.json")
        try Self.expectRefusal(["train", "--model", model.path, "--data", data.path, "--max-steps", "1", "--metrics-file", config.path],
                               mentions: ["--metrics-file \(config.path) is the input"], protecting: [model, data])
    }

    /// An existing metrics file is refused (only a resumed run appends); a new one is written.
    @Test func existingMetricsFileIsRefused() throws {
        let scratch = try ScratchDirectory()
        let data = try Self.data(in: scratch)
        let metrics = scratch.url.appendingPathComponent("metrics.jsonl")
        try Data("{\"step\": 1}\n".utf8).write(to: metrics)
        try Self.expectRefusal(["train", "--model", "tiny", "--data", data.path, "--max-steps", "1", "--metrics-file", metrics.path],
                               mentions: ["--metrics-file \(metrics.path) exists"], protecting: [metrics, data])
        let directory = scratch.url.appendingPathComponent("a-directory")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        try Self.expectRefusal(["train", "--model", "tiny", "--data", data.path, "--max-steps", "1", "--metrics-file", directory.path],
                               mentions: ["--metrics-file \(directory.path): exists and is not a regular file"], protecting: [data])
    }

    /// A regular file in --output-dir's place and a non-empty directory are refused before step 1; the
    /// leftover of a killed save (`.model.safetensors.tmp-XXXXXX`) is not "not empty" and the save removes it.
    @Test func outputDirectoryMustBeAFreshDirectory() throws {
        let scratch = try ScratchDirectory()
        let data = try Self.data(in: scratch)
        let base = ["train", "--model", "tiny", "--data", data.path, "--max-steps", "2", "--seq-len", "64"]
        let file = scratch.url.appendingPathComponent("a-file")
        try Data("keep me\n".utf8).write(to: file)
        try Self.expectRefusal(base + ["--output-dir", file.path], mentions: ["--output-dir \(file.path): exists and is not a directory"],
                               protecting: [file])
        let below = file.appendingPathComponent("out")
        try Self.expectRefusal(base + ["--output-dir", below.path], mentions: ["--output-dir \(below.path)", "create directory failed"],
                               protecting: [file])
        let used = scratch.url.appendingPathComponent("used")
        try FileManager.default.createDirectory(at: used, withIntermediateDirectories: true)
        try Data("mine\n".utf8).write(to: used.appendingPathComponent("notes.txt"))
        try Self.expectRefusal(base + ["--output-dir", used.path], mentions: ["\(used.path) exists and is not empty"], protecting: [used])

        let leftover = scratch.url.appendingPathComponent("leftover")
        try FileManager.default.createDirectory(at: leftover, withIntermediateDirectories: true)
        try Data(repeating: 7, count: 1000).write(to: leftover.appendingPathComponent(".model.safetensors.tmp-Ab12Cd"))
        let result = try Self.run(base + ["--output-dir", leftover.path])
        #expect(result.status == 0, "\(result.stderr)")
        let names = Set(try FileManager.default.contentsOfDirectory(atPath: leftover.path))
        #expect(Set(names.filter { !$0.hasPrefix("checkpoint-") }) == ["config.json", "model.safetensors", "generation_config.json"]
                && names.filter { $0.hasPrefix("checkpoint-") }.count == 1, "\(names)")
        #expect(AtomicFile.isLeftover(".model.safetensors.tmp-Ab12Cd") && AtomicFile.isLeftover(".config.json.tmp-000000"))
        #expect(!AtomicFile.isLeftover(".model.safetensors.tmp-Ab12C") && !AtomicFile.isLeftover("model.safetensors.tmp-Ab12Cd")
                && !AtomicFile.isLeftover(".tmp-Ab12Cd") && !AtomicFile.isLeftover(".notes.tmp-Ab12C!"))
    }

    /// `--resume PATH --output-dir DIR` skipped the non-empty check and overwrote DIR's files — the
    /// `--model` directory's `model.safetensors` included. A resumed run's DIR must be new, empty, or a
    /// run's (holding a `checkpoint-STEP` folder); a new one still works.
    @Test func resumingNeverWritesIntoAnotherDirectory() throws {
        let scratch = try ScratchDirectory()
        let data = try Self.data(in: scratch)
        let run = scratch.url.appendingPathComponent("run")
        let first = try Self.run(["train", "--model", "tiny", "--data", data.path, "--max-steps", "2", "--seq-len", "64",
                                  "--output-dir", run.path, "--save-every", "1"])
        #expect(first.status == 0, "\(first.stderr)")
        // An HF model directory of the same architecture (the run's final model) as --model.
        let model = scratch.url.appendingPathComponent("model")
        try FileManager.default.createDirectory(at: model, withIntermediateDirectories: true)
        for name in ["config.json", "model.safetensors"] {
            try FileManager.default.copyItem(at: run.appendingPathComponent(name), to: model.appendingPathComponent(name))
        }
        let base = ["train", "--model", model.path, "--data", data.path, "--max-steps", "2", "--seq-len", "64"]
        let checkpoint = run.appendingPathComponent("checkpoint-1").path
        try Self.expectRefusal(base + ["--resume", checkpoint, "--output-dir", model.path],
                               mentions: ["output directory \(model.path) exists, is not empty and holds no checkpoint of a run",
                                          "config.json, model.safetensors"],
                               protecting: [model])
        let used = scratch.url.appendingPathComponent("used")
        try FileManager.default.createDirectory(at: used, withIntermediateDirectories: true)
        try Data("mine\n".utf8).write(to: used.appendingPathComponent("notes.txt"))
        try Self.expectRefusal(base + ["--resume", checkpoint, "--output-dir", used.path],
                               mentions: ["output directory \(used.path) exists, is not empty and holds no checkpoint of a run (notes.txt)"],
                               protecting: [used])
        // The same directory with --resume latest: refused at run time, without the root command's usage (exit 64).
        let latest = try Self.run(base + ["--resume", "latest", "--output-dir", used.path])
        #expect(latest.status == 1 && latest.stderr.contains("has no complete checkpoint and holds other files (notes.txt)")
                && !latest.stderr.contains("Usage:"), "status \(latest.status)\n\(latest.stderr)")
        let fresh = scratch.url.appendingPathComponent("fresh")
        let resumed = try Self.run(base + ["--resume", checkpoint, "--output-dir", fresh.path])
        #expect(resumed.status == 0 && FileManager.default.fileExists(atPath: fresh.appendingPathComponent("model.safetensors").path),
                "\(resumed.stderr)")
    }

    /// `--resume PATH` that does not exist, is a file, or is the output directory instead of one of its
    /// checkpoints says so (all three were "incomplete checkpoint: … found no marker and no trainer_state.json").
    @Test func resumePathThatIsNotACheckpointIsNamed() throws {
        let scratch = try ScratchDirectory()
        let data = try Self.data(in: scratch)
        let run = scratch.url.appendingPathComponent("run")
        let base = ["train", "--model", "tiny", "--data", data.path, "--max-steps", "2", "--seq-len", "64"]
        let first = try Self.run(base + ["--output-dir", run.path, "--save-every", "1"])
        #expect(first.status == 0, "\(first.stderr)")
        let missing = scratch.url.appendingPathComponent("no-such-checkpoint").path
        try Self.expectRefusal(base + ["--resume", missing], mentions: ["--resume \(missing): no such checkpoint folder"])
        try Self.expectRefusal(base + ["--resume", data.path], mentions: ["--resume \(data.path): not a directory"], protecting: [data])
        try Self.expectRefusal(base + ["--resume", run.path, "--output-dir", scratch.url.appendingPathComponent("new").path],
                               mentions: ["--resume \(run.path): an output directory, not a checkpoint: it holds checkpoint-1, checkpoint-2",
                                          "the latest complete one is \(run.path)/checkpoint-2"],
                               protecting: [run])
    }

    /// `--data <(cat data.jsonl)` (a pipe) lost its first bytes to the prepared-file check and failed with
    /// "malformed JSON" at line 1; a pipe, FIFO or device is now refused by name before anything reads it.
    @Test func dataFromAPipeIsRefusedByName() throws {
        let scratch = try ScratchDirectory()
        let data = try Self.data(in: scratch)
        let fifo = scratch.url.appendingPathComponent("piped.jsonl")
        #expect(mkfifo(fifo.path, 0o644) == 0)
        // A writer as a shell's process substitution would start (it blocks until a reader opens the FIFO).
        let writer = try BackgroundJob(["/bin/sh", "-c", "cat '\(data.path)' > '\(fifo.path)'"], in: scratch, label: "writer")
        defer { kill(writer.pid, SIGKILL); _ = writer.finish(within: 5) }
        for arguments in [["train", "--max-steps", "1"], ["eval"]] {
            try Self.expectRefusal(arguments + ["--model", "tiny", "--data", fifo.path, "--seq-len", "64"],
                                   mentions: ["\(fifo.path): not a regular file (a pipe, FIFO or device)"])
        }
    }

    /// `--resume latest` of a finished run said "next step 3 of 2"; it says there is nothing left to train,
    /// and writes the final model again.
    @Test func resumingAFinishedRunSaysSo() throws {
        let scratch = try ScratchDirectory()
        let data = try Self.data(in: scratch)
        let run = scratch.url.appendingPathComponent("run")
        let base = ["train", "--model", "tiny", "--data", data.path, "--max-steps", "2", "--seq-len", "64", "--output-dir", run.path]
        #expect(try Self.run(base).status == 0)
        try FileManager.default.removeItem(at: run.appendingPathComponent("model.safetensors"))
        let again = try Self.run(base + ["--resume", "latest"])
        #expect(again.status == 0, "\(again.stderr)")
        #expect(again.stdout.contains("step 2 was the run's last (of 2): nothing left to train") && !again.stdout.contains("next step 3 of 2"),
                "\(again.stdout)")
        #expect(FileManager.default.fileExists(atPath: run.appendingPathComponent("model.safetensors").path))
    }

    /// A small tmpfs mounted at `directory` (root only; nil where mounting is not allowed).
    final class TemporaryMount {
        let url: URL
        init?(at url: URL, options: String) {
            self.url = url
            try? FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
            guard geteuid() == 0, options.withCString({ mount("tmpfs", url.path, "tmpfs", 0, $0) }) == 0 else { return nil }
        }
        deinit { umount2(url.path, 2) }  // MNT_DETACH
    }

    /// A read-only file system and a full one under --output-dir (or the metrics file): an error before
    /// step 1 naming the path and the reason.
    @Test func readOnlyAndFullFileSystemsFailBeforeStepOne() throws {
        let scratch = try ScratchDirectory()
        let data = try Self.data(in: scratch)
        let base = ["train", "--model", "tiny", "--data", data.path, "--max-steps", "2", "--seq-len", "64"]
        guard let readOnly = TemporaryMount(at: scratch.url.appendingPathComponent("ro"), options: "size=1m,ro"),
              let full = TemporaryMount(at: scratch.url.appendingPathComponent("full"), options: "size=1m") else {
            print("skipped: mounting a tmpfs needs root")
            return
        }
        try Self.expectRefusal(base + ["--output-dir", readOnly.url.appendingPathComponent("out").path],
                               mentions: ["--output-dir \(readOnly.url.path)/out: create directory failed: Read-only file system (errno 30)"])
        try Self.expectRefusal(base + ["--output-dir", readOnly.url.path],
                               mentions: ["--output-dir \(readOnly.url.path): cannot create a file in it: Read-only file system (errno 30)"])
        try Self.expectRefusal(base + ["--metrics-file", readOnly.url.appendingPathComponent("m.jsonl").path],
                               mentions: ["\(readOnly.url.path)/m.jsonl: create the metrics file failed: Read-only file system (errno 30)"])
        // 1 MiB holds less than the tiny model's final export needs (0.4 MB + 1 MiB).
        try Self.expectRefusal(base + ["--output-dir", full.url.appendingPathComponent("out").path],
                               mentions: ["--output-dir \(full.url.path)/out:", "MB free, the final model needs"])
    }

    /// Every numeric option outside its range (NaN and infinities included) is an error naming it,
    /// never a trap: before, `--grad-accum 2^63-1` and eval/plan/bench/self-test sizes crashed, and
    /// `--weight-decay inf`, `--clip-grad-norm inf`, `tokenize --seconds nan` were accepted.
    /// Valid settings that do nothing in this run are named in a warning, once (rank 0), and the run
    /// goes on: `--prefetch-depth` below stage 3, `--reductions-in-flight` below stage 2, a warm-up of at
    /// least the run's steps (with the highest rate it reaches); none of them at stage 3 with a short warm-up.
    @Test func settingsWithoutEffectAreWarnedOnce() throws {
        let scratch = try ScratchDirectory()
        let data = try Self.data(in: scratch).path
        let common = ["train", "--model", "tiny", "--data", data, "--seq-len", "64", "--max-steps", "3", "--prefetch-depth", "2",
                      "--reductions-in-flight", "3"]
        let low = try Self.run(common + ["--zero-stage", "1", "--warmup-steps", "50"], ranks: 2)
        #expect(low.status == 0, "\(low.stderr)")
        for expected in ["zero-sft: warning: --prefetch-depth 2 has no effect at --zero-stage 1: only stage 3 gathers parameters",
                         "zero-sft: warning: --reductions-in-flight 3 has no effect at --zero-stage 1",
                         "zero-sft: warning: --warmup-steps 50 is not below the run's 3 steps: the learning rate never reaches --lr 2e-05 (at most 8e-07)"] {
            #expect(low.stderr.components(separatedBy: expected).count == 2, "once: \(expected)\n\(low.stderr)")
        }
        let three = try Self.run(common + ["--zero-stage", "3", "--warmup-steps", "1"], ranks: 2)
        #expect(three.status == 0 && !three.stderr.contains("has no effect") && !three.stderr.contains("never reaches"), "\(three.stderr)")
    }

    @Test func numericOptionsOutOfRangeAreNamed() throws {
        let scratch = try ScratchDirectory()
        let data = try Self.data(in: scratch).path
        let huge = String(Int.max)
        let train = ["train", "--model", "tiny", "--data", data, "--max-steps", "1"]
        let cases: [([String], String)] = [
            (train + ["--grad-accum", huge], "--grad-accum must be in [1, 1048576]"),
            (train + ["--micro-batch-size", huge], "--micro-batch-size must be in [1, 1048576]"),
            (train + ["--seq-len", huge], "--seq-len must be in [2, 134217728]"),
            (train + ["--seq-len", "134217728", "--micro-batch-size", "1048576", "--force"], "tokens per micro-batch"),
            (train + ["--weight-decay", "inf"], "--weight-decay must be a finite number"),
            (train + ["--weight-decay", "nan"], "--weight-decay must be a finite number"),
            (train + ["--weight-decay", "1e6"], "--weight-decay × --lr must be at most 1"),
            (train + ["--clip-grad-norm", "inf"], "--clip-grad-norm must be a finite number"),
            (train + ["--clip-grad-norm", "nan"], "--clip-grad-norm must be a finite number"),
            (train + ["--lr", "nan"], "--lr must be a positive number"),
            (train + ["--lr", "inf"], "--lr must be a positive number"),
            (train + ["--min-lr", "1"], "--min-lr must be in [0, --lr]"),
            (train + ["--min-lr", "nan"], "--min-lr must be in [0, --lr]"),
            (train + ["--collective-timeout", "inf"], "--collective-timeout must be a positive number"),
            (["eval", "--model", "tiny", "--data", data, "--seq-len", huge], "--seq-len must be in [2, 134217728]"),
            (["eval", "--model", "tiny", "--data", data, "--tokens-per-forward", huge], "--tokens-per-forward must be in [1, 134217728]"),
            (["plan", "--model", "tiny", "--seq-len", huge], "--seq-len must be in [2, 134217728]"),
            (["plan", "--model", "tiny", "--micro-batch-size", huge], "--micro-batch-size must be in [1, 1048576]"),
            (["bench", "--model", "tiny", "--steps", huge], "--steps must be in [1, 1048576]"),
            (["bench", "--model", "tiny", "--micro-batch-size", huge], "--micro-batch-size must be in [1, 1048576]"),
            (["bench", "--model", "tiny", "--seq-len", huge], "--seq-len must be in [2, 134217728]"),
            (["bench", "--model", "tiny", "--supervised-fraction", "nan"], "--supervised-fraction must be in (0, 1]"),
            (["self-test", "--large-count", huge], "--large-count must be in [1, 2^31]"),
            (["tokenize", "--model", "tiny", "--bench", data, "--seconds", "nan"], "--seconds must be a positive number"),
            (["tokenize", "--model", "tiny", "--bench", data, "--seconds", "inf"], "--seconds must be a positive number"),
            (["inspect-data", "--model", "tiny", "--data", data, "--seq-len", huge], "--seq-len must be in [2, 134217728]"),
            (["generate", "--model", "tiny", "--prompt", "hi", "--temperature", "nan"], "--temperature must be 0 (greedy) or positive"),
            (["generate", "--model", "tiny", "--prompt", "hi", "--top-p", "nan"], "--top-p must be in (0, 1]"),
            (["demo", "--lr", "inf"], "--lr must be a positive number"),
        ]
        for (arguments, message) in cases {
            try Self.expectRefusal(arguments, mentions: [message], protecting: [URL(fileURLWithPath: data)])
        }
    }

    /// Every numeric option of every command (from `--experimental-dump-help`) given `nan`, `inf` and
    /// `-inf` is refused naming the option, never accepted and never a trap (before: `train
    /// --weight-decay inf` and `--clip-grad-norm inf` trained, `tokenize --bench F --seconds nan` ran).
    @Test func everyNumericOptionRefusesNaNAndInfinities() throws {
        let options = try ZeroSFTBinary.numericOptions(inHelpDump: Self.run(["--experimental-dump-help"]).stdout)
        let scratch = try ScratchDirectory()
        let data = try Self.data(in: scratch)
        let required: [String: [String]] = [
            "train": ["--data", data.path], "eval": ["--data", data.path], "generate": ["--prompt", "x"],
            "export": ["--out", scratch.url.appendingPathComponent("out").path], "tokenize": ["--model", "tiny", "--bench", data.path],
            "inspect-data": ["--model", "tiny", "--data", data.path],
        ]
        var checked = 0
        for (name, option) in options {
            for value in ["nan", "inf", "-inf"] {
                try Self.expectRefusal([name] + (required[name] ?? []) + ["--\(option)", value], mentions: ["--\(option)"], protecting: [data])
                checked += 1
            }
        }
        #expect(checked >= 120, "only \(checked) option checks: did --experimental-dump-help change?")
    }

    // MARK: - Part 8: errors mid-run

    /// A metrics file whose disk fills mid-run: the error names the file, the step and the reason; the
    /// job ends non-zero; the file ends with a whole line.
    @Test func fullDiskWhileWritingMetricsNamesTheFile() throws {
        let scratch = try ScratchDirectory()
        let data = try Self.data(in: scratch)
        guard let small = TemporaryMount(at: scratch.url.appendingPathComponent("small"), options: "size=64k") else {
            print("skipped: mounting a tmpfs needs root")
            return
        }
        let metrics = small.url.appendingPathComponent("metrics.jsonl")
        let result = try Self.run(["train", "--model", "tiny", "--data", data.path, "--max-steps", "400", "--seq-len", "64",
                                   "--metrics-file", metrics.path])
        #expect(result.status != 0, "\(result.stdout)")
        #expect(result.stderr.contains("\(metrics.path): append step ") && result.stderr.contains("to the metrics file failed: No space left on device (errno 28)"),
                "\(result.stderr)")
        #expect(!result.stderr.contains("NSCocoaErrorDomain"))
        let written = try Data(contentsOf: metrics)
        #expect(!written.isEmpty && written.last == UInt8(ascii: "\n"), "the metrics file ends with half a line")
        for line in written.split(separator: UInt8(ascii: "\n")) {
            #expect((try? JSONSerialization.jsonObject(with: Data(line))) != nil, "a broken line: \(String(decoding: line, as: UTF8.self))")
        }
    }

    /// Small files written into a full or read-only directory: the error names the file and what failed;
    /// nothing half-written is left under the destination's name, and no temporary file stays.
    @Test func atomicWritesNeverLeaveHalfFiles() throws {
        let scratch = try ScratchDirectory()
        guard let small = TemporaryMount(at: scratch.url.appendingPathComponent("small"), options: "size=64k") else {
            print("skipped: mounting a tmpfs needs root")
            return
        }
        let destination = small.url.appendingPathComponent("tokenizer.json")
        try AtomicFile.write(Data("old\n".utf8), to: destination)
        #expect(throws: CheckpointError.self) { try AtomicFile.write(Data(repeating: 65, count: 200_000), to: destination) }
        do {
            try AtomicFile.write(Data(repeating: 65, count: 200_000), to: destination)
        } catch {
            #expect("\(error)".contains(destination.path) && "\(error)".contains("No space left on device (errno 28)"), "\(error)")
        }
        #expect(try Data(contentsOf: destination) == Data("old\n".utf8))
        #expect(try FileManager.default.contentsOfDirectory(atPath: small.url.path) == ["tokenizer.json"])
    }

    // MARK: - Part 5: signals

    /// A job started in the background with its output in files; signalled by the test. Spawned as
    /// ``MPIRun`` spawns (`posix_spawn` with an empty signal mask and default dispositions: the test
    /// runner blocks SIGTERM, and a blocked mask is inherited).
    final class BackgroundJob {
        let pid: pid_t
        let stdout: URL
        let stderr: URL
        private var status: Int32?

        init(_ command: [String], environment: [String: String] = [:], in scratch: ScratchDirectory, label: String) throws {
            stdout = scratch.url.appendingPathComponent("\(label).out")
            stderr = scratch.url.appendingPathComponent("\(label).err")
            // As MPIRun's: the same thread count and library as the runs it is compared with.
            var childEnvironment = MPIRun.inheritedEnvironment()
            childEnvironment.merge(MPIRun.testSettings(environment, inherited: childEnvironment)) { $1 }
            switch ProcessSpawn.spawn(command, environment: childEnvironment, stdout: .file(stdout.path), stderr: .file(stderr.path)) {
            case .success(let pid): self.pid = pid
            case .failure(let error): throw TestFailure("could not start \(command[0]): errno \(error.errno)")
            }
        }

        /// The exit status (128 + signal when killed), reaping the process once it ended.
        var isRunning: Bool {
            guard status == nil else { return false }
            var raw: Int32 = 0
            guard waitpid(pid, &raw, WNOHANG) == pid else { return true }
            let signal = raw & 0x7f
            status = signal == 0 ? (raw >> 8) & 0xff : 128 + signal
            return false
        }

        /// Waits until `file` holds at least `lines` lines (false after `seconds`).
        func wait(for file: URL, lines: Int, seconds: Double) -> Bool {
            let deadline = Date().addingTimeInterval(seconds)
            while Date() < deadline, isRunning {
                if let text = try? String(contentsOf: file, encoding: .utf8), text.split(separator: "\n").count >= lines { return true }
                usleep(50_000)
            }
            return false
        }

        /// Waits for the exit (killing the whole process group after `seconds`); returns the status and
        /// the seconds waited.
        func finish(within seconds: Double) -> (status: Int32, seconds: Double, stdout: String, stderr: String) {
            let started = Date()
            while isRunning, Date().timeIntervalSince(started) < seconds { usleep(20_000) }
            if isRunning {
                killpg(pid, SIGKILL)
                while isRunning { usleep(20_000) }
            }
            let waited = Date().timeIntervalSince(started)
            return (status ?? -1, waited, (try? String(contentsOf: stdout, encoding: .utf8)) ?? "",
                    (try? String(contentsOf: stderr, encoding: .utf8)) ?? "")
        }

        /// The direct children of `pid` (`/proc/PID/task/*/children`).
        static func children(of pid: Int32) -> [Int32] {
            let tasks = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/task")) ?? []
            return tasks.flatMap { task in
                ((try? String(contentsOfFile: "/proc/\(pid)/task/\(task)/children", encoding: .utf8)) ?? "")
                    .split(separator: " ").compactMap { Int32($0.trimmingCharacters(in: .whitespacesAndNewlines)) }
            }
        }
    }

    /// What a stopped run left: the metrics lines, and the saved model's step count as the stderr line says.
    static func expectStopped(_ result: (status: Int32, seconds: Double, stdout: String, stderr: String), status: Int32, signal: String,
                              metrics: URL, output: URL?, sourceLocation: SourceLocation = #_sourceLocation) throws {
        #expect(result.status == status, "status \(result.status), expected \(status)\n\(result.stderr)", sourceLocation: sourceLocation)
        let lines = try String(contentsOf: metrics, encoding: .utf8).split(separator: "\n")
        let steps = lines.count
        #expect(steps >= 2 && steps < 100_000, "\(steps) metrics lines", sourceLocation: sourceLocation)
        let expected = output.map { "stopped by \(signal) after step \(steps) of 100000: saved a checkpoint to \($0.path)/checkpoint-\(steps)" }
            ?? "stopped by \(signal) after step \(steps) of 100000: nothing saved (no --output-dir)"
        #expect(result.stderr.contains(expected), "stderr lacks '\(expected)':\n\(result.stderr)", sourceLocation: sourceLocation)
        #expect(result.stdout.contains("\(signal) received: stopping before step \(steps + 1)/100000"), "\(result.stdout)",
                sourceLocation: sourceLocation)
        if let output {
            let checkpoint = output.appendingPathComponent("checkpoint-\(steps)")
            for name in ["COMPLETE", "trainer_state.json", "config.json"] {
                #expect(FileManager.default.fileExists(atPath: checkpoint.appendingPathComponent(name).path), "\(checkpoint.path) lacks \(name)",
                        sourceLocation: sourceLocation)
            }
        }
    }

    /// One rank without mpirun: SIGTERM saves the model after the last finished step and exits 143;
    /// SIGINT exits 130 (nothing saved without --output-dir).
    @Test func signalStopsASingleRankAtAStepBoundary() throws {
        let scratch = try ScratchDirectory()
        let data = try Self.data(in: scratch)
        let binary = try ZeroSFTBinary.locate().path
        for (signal, name, status, save) in [(SIGTERM, "SIGTERM", Int32(143), true), (SIGINT, "SIGINT", Int32(130), false)] {
            let metrics = scratch.url.appendingPathComponent("\(name).jsonl")
            let output = scratch.url.appendingPathComponent("\(name)-model")
            let result = try TestProcesses.serially {
                let job = try BackgroundJob([binary, "train", "--model", "tiny", "--data", data.path, "--seq-len", "64", "--max-steps", "100000",
                                             "--metrics-file", metrics.path] + (save ? ["--output-dir", output.path] : []),
                                            in: scratch, label: name)
                #expect(job.wait(for: metrics, lines: 3, seconds: 60))
                kill(job.pid, signal)
                return job.finish(within: 60)
            }
            try Self.expectStopped(result, status: status, signal: name, metrics: metrics, output: save ? output : nil)
        }
    }

    /// Two ranks under launch/run: SIGTERM to launch/run (what Kubernetes sends) is relayed, the ranks
    /// save and launch/run exits 143; SIGTERM to one rank of a plain mpirun job stops both ranks at the
    /// same step and mpirun exits 143.
    @Test func signalStopsEveryRankAtTheSameStep() throws {
        let scratch = try ScratchDirectory()
        let data = try Self.data(in: scratch)
        let binary = try ZeroSFTBinary.locate().path
        let run = ZeroSFTBinary.packageRoot.appendingPathComponent("launch/run").path
        let train = ["train", "--model", "tiny", "--data", data.path, "--seq-len", "64", "--max-steps", "100000"]

        let metrics = scratch.url.appendingPathComponent("relayed.jsonl")
        let output = scratch.url.appendingPathComponent("relayed-model")
        let relayed = try TestProcesses.serially {
            let job = try BackgroundJob([run, "-n", "2", "--"] + train + ["--metrics-file", metrics.path, "--output-dir", output.path],
                                        environment: ["ZERO_SFT_BINARY": binary], in: scratch, label: "relayed")
            #expect(job.wait(for: metrics, lines: 3, seconds: 90))
            kill(job.pid, SIGTERM)
            return job.finish(within: 60)
        }
        try Self.expectStopped(relayed, status: 143, signal: "SIGTERM", metrics: metrics, output: output)
        #expect(relayed.seconds < 20, "launch/run took \(relayed.seconds) s from SIGTERM to exit")

        let oneRank = scratch.url.appendingPathComponent("one-rank.jsonl")
        let direct = try TestProcesses.serially {
            let mpirun = (ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin").split(separator: ":")
                .map { "\($0)/mpirun" }.first { FileManager.default.isExecutableFile(atPath: $0) } ?? "/usr/bin/mpirun"
            let job = try BackgroundJob([mpirun, "--allow-run-as-root", "--oversubscribe", "--bind-to", "none", "-n", "2", binary]
                                        + train + ["--metrics-file", oneRank.path], in: scratch, label: "one-rank")
            #expect(job.wait(for: oneRank, lines: 3, seconds: 90))
            let ranks = BackgroundJob.children(of: job.pid)
            #expect(ranks.count == 2, "mpirun's children: \(ranks)")
            if let last = ranks.last { kill(last, SIGTERM) }
            return job.finish(within: 60)
        }
        try Self.expectStopped(direct, status: 143, signal: "SIGTERM", metrics: oneRank, output: nil)
    }

    /// SIGTERM to `launch/run` running a command other than `train` (eval, bench, self-test: nothing to save)
    /// exits 143; it exited 138 saying "the job failed …: the stop's checkpoint may be missing".
    @Test func signalToLaunchRunStopsOtherCommandsWith143() throws {
        let scratch = try ScratchDirectory()
        let binary = try ZeroSFTBinary.locate().path
        let run = ZeroSFTBinary.packageRoot.appendingPathComponent("launch/run").path
        let result = try TestProcesses.serially {
            let job = try BackgroundJob([run, "-n", "2", "--", "bench", "--model", "tiny", "--seq-len", "64", "--steps", "1000000"],
                                        environment: ["ZERO_SFT_BINARY": binary], in: scratch, label: "bench")
            #expect(job.wait(for: job.stdout, lines: 1, seconds: 60))
            kill(job.pid, SIGTERM)
            return job.finish(within: 60)
        }
        #expect(result.status == 143, "status \(result.status)\n\(result.stderr)")
        #expect(!result.stderr.contains("checkpoint may be missing"), "\(result.stderr)")
    }

    /// The disk fills during the run, then SIGTERM: the checkpoint save fails naming the rank's shard file
    /// and the reason, the job ends non-zero (not 143: nothing was saved), and nothing but the temporary
    /// folder (which the next save removes) stays.
    @Test func fullDiskWhileSavingOnASignalNamesTheFile() throws {
        let scratch = try ScratchDirectory()
        let data = try Self.data(in: scratch)
        guard let small = TemporaryMount(at: scratch.url.appendingPathComponent("small"), options: "size=2m") else {
            print("skipped: mounting a tmpfs needs root")
            return
        }
        let output = small.url.appendingPathComponent("out")
        let metrics = scratch.url.appendingPathComponent("metrics.jsonl")
        let binary = try ZeroSFTBinary.locate().path
        let result = try TestProcesses.serially {
            let job = try BackgroundJob([binary, "train", "--model", "tiny", "--data", data.path, "--seq-len", "64", "--max-steps", "100000",
                                         "--metrics-file", metrics.path, "--output-dir", output.path], in: scratch, label: "full")
            #expect(job.wait(for: metrics, lines: 3, seconds: 60))
            // Someone else fills the disk.
            let filler = small.url.appendingPathComponent("filler")
            _ = FileManager.default.createFile(atPath: filler.path, contents: nil)
            let handle = try FileHandle(forWritingTo: filler)
            let chunk = Data(repeating: 1, count: 64 << 10)
            while (try? handle.write(contentsOf: chunk)) != nil {}
            try handle.close()
            kill(job.pid, SIGTERM)
            return job.finish(within: 60)
        }
        #expect(result.status == 1, "status \(result.status)\n\(result.stderr)")
        #expect(result.stderr.contains("rank-00000-of-00001.safetensors: ") && result.stderr.contains("No space left on device (errno 28)"),
                "\(result.stderr)")
        #expect(!result.stderr.contains("NSCocoaErrorDomain"))
        // No checkpoint, complete or not, and no model: at most the temporary folder the next save removes.
        let left = try FileManager.default.contentsOfDirectory(atPath: output.path)
        #expect(left.allSatisfy(TrainingCheckpointFormat.isTemporary), "left in the output directory: \(left)")
    }

    /// Runs `common` to its end (metrics in `straight`), then again with an output directory, sends
    /// SIGTERM once its metrics file has `afterLines` lines, and resumes it with `--resume latest` into
    /// the same metrics file; expects exit 0, 143 and 0.
    static func stopAndResume(_ common: [String], binary: String, in scratch: ScratchDirectory, afterLines: Int) throws
        -> (straight: URL, metrics: URL, output: URL, stopped: (status: Int32, seconds: Double, stdout: String, stderr: String),
            resumed: (status: Int32, stdout: String, stderr: String)) {
        let straight = scratch.url.appendingPathComponent("straight.jsonl")
        let reference = try run(common + ["--metrics-file", straight.path])
        #expect(reference.status == 0, "\(reference.stderr)")
        let metrics = scratch.url.appendingPathComponent("stopped.jsonl"), output = scratch.url.appendingPathComponent("out")
        let stopped = try TestProcesses.serially {
            let job = try BackgroundJob([binary] + common + ["--metrics-file", metrics.path, "--output-dir", output.path],
                                        in: scratch, label: "stopped")
            #expect(job.wait(for: metrics, lines: afterLines, seconds: 120))
            kill(job.pid, SIGTERM)
            return job.finish(within: 120)
        }
        #expect(stopped.status == 143, "status \(stopped.status)\n\(stopped.stderr)")
        let resumed = try run(common + ["--metrics-file", metrics.path, "--output-dir", output.path, "--resume", "latest"])
        #expect(resumed.status == 0, "\(resumed.stderr)")
        return (straight, metrics, output, stopped, resumed)
    }

    /// SIGTERM mid-run saves `checkpoint-S`; `--resume latest` then finishes the run, and every step's loss
    /// and gradient norm equal the uninterrupted run's bit for bit, each step once in the metrics file.
    @Test func aStoppedRunResumesToTheUninterruptedRun() throws {
        let scratch = try ScratchDirectory()
        let data = try Self.data(in: scratch)
        let binary = try ZeroSFTBinary.locate().path
        // Enough steps (a few ms each) that the signal lands mid-run.
        let common = ["train", "--model", "tiny", "--data", data.path, "--seq-len", "64", "--max-steps", "800", "--lr", "1e-3",
                      "--warmup-steps", "10"]
        let (straight, metrics, output, _, resumed) = try Self.stopAndResume(common, binary: binary, in: scratch, afterLines: 3)
        #expect(resumed.stdout.contains("resuming from \(output.path)/checkpoint-"), "\(resumed.stdout)")
        func steps(_ url: URL) throws -> [(step: Int, loss: Double, norm: Double)] {
            try String(contentsOf: url, encoding: .utf8).split(separator: "\n").map { line in
                let object = try #require(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])
                return (try #require(object["step"] as? Int), try #require(object["loss"] as? Double), try #require(object["grad_norm"] as? Double))
            }
        }
        let a = try steps(straight), b = try steps(metrics)
        #expect(b.map(\.step) == Array(1...800), "steps in the resumed metrics file: \(b.count) lines")
        let differing = zip(a, b).filter { $0.loss != $1.loss || $0.norm != $1.norm }
        #expect(differing.isEmpty, "\(differing.count) steps differ, first \(differing.first.map { "step \($0.0.step): \($0.1.loss) vs \($0.0.loss)" } ?? "")")
    }

    /// SIGTERM during a long evaluation (here the one due after step 5, several seconds of forwards)
    /// stops the run between two forwards, not after the whole evaluation (which could outlast a
    /// scheduler's grace period and lose the stop's checkpoint): exit 143, checkpoint-5 saved, the
    /// abandoned evaluation not recorded. Resumed, the run evaluates step 5 first, and its metrics equal
    /// the uninterrupted run's: every step's loss and every evaluation's loss, each once, in order.
    /// The signal is sent once step 5's line is in the metrics file, while the evaluation that follows runs.
    @Test func signalDuringAnEvaluationStopsBetweenForwards() throws {
        let scratch = try ScratchDirectory()
        let data = try Self.data(in: scratch)
        let eval = scratch.url.appendingPathComponent("eval.jsonl")
        let lines = syntheticExamples(count: 20_000, seed: 21).map { #"{"input_ids": \#($0.inputIDs), "labels": \#($0.labels)}"# }
        try Data((lines.joined(separator: "\n") + "\n").utf8).write(to: eval)
        let binary = try ZeroSFTBinary.locate().path
        let common = ["train", "--model", "tiny", "--data", data.path, "--eval-data", "held=\(eval.path)", "--eval-every", "5",
                      "--seq-len", "64", "--micro-batch-size", "1", "--max-steps", "8"]
        // Lines: the evaluation at step 0, then steps 1–5; the evaluation after step 5 is running.
        let (straight, metrics, output, stopped, _) = try Self.stopAndResume(common, binary: binary, in: scratch, afterLines: 6)
        #expect(stopped.stdout.contains("SIGTERM received during the evaluation at step 5: stopping"), "\(stopped.stdout)")
        #expect(stopped.stderr.contains("stopped by SIGTERM after step 5 of 8: saved a checkpoint to \(output.path)/checkpoint-5"),
                "\(stopped.stderr)")
        // (kind, step, loss): a step line's loss, or an evaluation line's loss of the set.
        func records(_ url: URL) throws -> [String] {
            try String(contentsOf: url, encoding: .utf8).split(separator: "\n").map { line in
                let object = try #require(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])
                let step = try #require(object["step"] as? Int)
                if let eval = object["eval"] as? [String: Any] {
                    let held = try #require(eval["held"] as? [String: Any])
                    return "eval \(step) \(try #require(held["loss"] as? Double))"
                }
                return "step \(step) \(try #require(object["loss"] as? Double))"
            }
        }
        let a = try records(straight), b = try records(metrics)
        #expect(a.count == 11 && b == a, "resumed:\n\(b.joined(separator: "\n"))\nuninterrupted:\n\(a.joined(separator: "\n"))")
    }

    /// launch/run's relayed SIGTERM (SIGUSR1) during the start-up before MPI_Init — resolving the model,
    /// parsing the data — killed the rank (SIGUSR1's default action): mpirun then took 2 × its grace period
    /// (60 s) to exit 138, "the job failed". The rank now records it from the start and stops before step 1.
    /// Deterministic: `--model` is a FIFO config.json, so the rank waits in its `open` until the test writes it.
    @Test func relayedStopDuringStartUpStopsBeforeStepOne() throws {
        let scratch = try ScratchDirectory()
        let data = try Self.data(in: scratch)
        let config = scratch.url.appendingPathComponent("config.json")
        #expect(mkfifo(config.path, 0o644) == 0)
        let binary = try ZeroSFTBinary.locate().path
        let result = try TestProcesses.serially {
            let job = try BackgroundJob([binary, "train", "--model", config.path, "--data", data.path, "--seq-len", "64", "--max-steps", "2"],
                                        environment: ["ZERO_SFT_SIGNAL_RELAY": "1"], in: scratch, label: "start-up")
            // SIGUSR1 caught (SigCgt bit 9) while the rank still waits for its config.json.
            func catchesSIGUSR1() -> Bool {
                let status = (try? String(contentsOfFile: "/proc/\(job.pid)/status", encoding: .utf8)) ?? ""
                guard let line = status.split(separator: "\n").first(where: { $0.hasPrefix("SigCgt:") }),
                      let mask = UInt64(line.dropFirst("SigCgt:".count).trimmingCharacters(in: .whitespaces), radix: 16) else { return false }
                return mask & (1 << UInt64(SIGUSR1 - 1)) != 0
            }
            let deadline = Date().addingTimeInterval(10)
            while !catchesSIGUSR1(), job.isRunning, Date() < deadline { usleep(10_000) }
            #expect(catchesSIGUSR1(), "the rank does not catch SIGUSR1 before MPI_Init")
            kill(job.pid, SIGUSR1)
            usleep(100_000)
            // Release the reader (non-blocking: nobody may be reading any more).
            let writer = open(config.path, O_WRONLY | O_NONBLOCK)
            if writer >= 0 {
                let text = #"{"model_type": "llama", "vocab_size": 256, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 4}"#
                _ = text.withCString { write(writer, $0, strlen($0)) }
                close(writer)
            }
            return job.finish(within: 60)
        }
        #expect(result.status == 0, "status \(result.status) (relayed ranks exit 0 after a stop; 138 = killed by SIGUSR1)\n\(result.stderr)")
        #expect(result.stderr.contains("stopped by SIGTERM before step 1: nothing to save"), "\(result.stderr)")
        #expect(!result.stdout.contains("step 1/2 |"), "trained:\n\(result.stdout)")
    }

    /// A second signal while the first is being honoured ends the process at once, with its message.
    @Test func secondSignalExitsAtOnce() throws {
        let scratch = try ScratchDirectory()
        let data = try Self.data(in: scratch)
        let binary = try ZeroSFTBinary.locate().path
        let metrics = scratch.url.appendingPathComponent("twice.jsonl")
        let result = try TestProcesses.serially {
            // Steps long enough (seq-len 2048, 8 rows) that the second signal lands before the first is honoured.
            let job = try BackgroundJob([binary, "train", "--model", "small", "--data", data.path, "--seq-len", "2048", "--micro-batch-size", "8",
                                         "--max-steps", "100000", "--metrics-file", metrics.path,
                                         "--output-dir", scratch.url.appendingPathComponent("never").path],
                                        in: scratch, label: "twice")
            #expect(job.wait(for: metrics, lines: 1, seconds: 90))
            kill(job.pid, SIGTERM)
            usleep(20_000)
            kill(job.pid, SIGTERM)
            return job.finish(within: 60)
        }
        #expect(result.status == 143, "\(result.stderr)")
        #expect(result.stderr.contains("second SIGTERM: exiting at once without saving (exit 143)"), "\(result.stderr)")
        #expect(!FileManager.default.fileExists(atPath: scratch.url.appendingPathComponent("never/model.safetensors").path))
    }
}

/// The tiny Llama's HF directory copied into `scratch` (a model directory whose files are inputs).
enum CommandTestsModel {
    static func copy(into scratch: ScratchDirectory) throws -> URL {
        let fixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("ModelIOTests/Fixtures/tiny-llama")
        let directory = scratch.url.appendingPathComponent("tiny-llama")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        for name in ["config.json", "model.safetensors"] {
            try FileManager.default.copyItem(at: fixtures.appendingPathComponent(name), to: directory.appendingPathComponent(name))
        }
        return directory
    }
}
