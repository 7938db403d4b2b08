import ArgumentParser
import Checkpoints
import Foundation
import Models
import Training

/// `train`'s checkpoint options: periodic saves, how many to keep, and resuming.
struct CheckpointArguments: ParsableArguments {
    @Option(name: .long, help: ArgumentHelp(
        "Save a checkpoint every N optimizer steps into OUTPUT_DIR/checkpoint-STEP (one is always saved at the end).",
        discussion: "Each rank writes its partition of the parameters and both AdamW moments (fp32) to its own file; rank 0 the manifest (trainer_state.json), config and tokenizer files. See docs/checkpoints.md."))
    var saveEvery: Int?
    @Option(name: .long, help: "Keep only the newest K complete checkpoints (older ones are deleted after each save).")
    var keepLast: Int?
    @Option(name: .long, help: ArgumentHelp(
        "Continue a run from a checkpoint: `latest` (the newest complete one in --output-dir) or a checkpoint folder.",
        discussion: "Any rank count and ZeRO stage may resume it; the data, --seed, --seq-len and the rows per step (ranks × --micro-batch-size × --grad-accum) must be those of the saved run. With the same rank count and stage the run continues bitwise identically.",
        valueName: "latest|path"))
    var resume: String?

    func validate(outputDir: String?) throws {
        if let saveEvery, saveEvery < 1 { throw ValidationError("--save-every must be at least 1 (got \(saveEvery))") }
        if let keepLast, keepLast < 1 { throw ValidationError("--keep-last must be at least 1 (got \(keepLast))") }
        if outputDir == nil {
            if saveEvery != nil { throw ValidationError("--save-every needs --output-dir (checkpoints go to OUTPUT_DIR/checkpoint-STEP)") }
            if keepLast != nil { throw ValidationError("--keep-last needs --output-dir") }
            if resume == "latest" { throw ValidationError("--resume latest needs --output-dir (where the checkpoints are)") }
        }
        if let resume, resume.isEmpty { throw ValidationError("--resume needs `latest` or a checkpoint folder") }
    }

    /// Resolves `--resume` (and checks `--output-dir`) before any rank starts work: the checkpoint to
    /// continue, opened (format, completion marker, every shard file's size) and checked against the
    /// model; and the lines to print about it. (Without `--resume`, `OutputCheck.outputDirectory`
    /// refuses a non-empty output directory — HF Trainer's rule — its message pointing at `--resume latest`.)
    func resolve(outputDir: String?, layout: ParameterLayout) throws -> (resume: CheckpointResume?, notes: [String]) {
        // Without --resume, `OutputCheck.outputDirectory` refuses a non-empty directory (pointing at --resume latest).
        guard let argument = resume else { return (nil, []) }
        let outputURL = outputDir.map { URL(fileURLWithPath: $0) }
        let (directory, skipped) = try CheckpointResume.locate(argument, outputDirectory: outputURL)
        var notes = skipped.map { "--resume latest: skipping \($0.url.lastPathComponent): \($0.problem ?? "incomplete")" }
        guard let directory else {
            // `latest` and no complete checkpoint: a first attempt (or one killed before its first save)
            // starts from step 0, provided the directory holds nothing but checkpoint folders of ours.
            let names = ((try? FileManager.default.contentsOfDirectory(atPath: outputDir ?? "")) ?? [])
                .filter { !TrainingCheckpointFormat.isTemporary($0) && TrainingCheckpointFormat.step(ofDirectoryNamed: $0) == nil }
            if !names.isEmpty {
                throw OptionError(message: "--resume latest: \(outputDir ?? "") has no complete checkpoint and holds other files "
                    + "(\(names.sorted().prefix(3).joined(separator: ", "))): choose a new --output-dir")
            }
            notes.append("--resume latest: no complete checkpoint in \(outputDir ?? ""): starting from step 0")
            return (nil, notes)
        }
        let resume = try CheckpointResume(directory: directory)
        try resume.checkModel(layout)
        return (resume, notes)
    }
}
