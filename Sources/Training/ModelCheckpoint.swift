import Checkpoints
import Collectives
import Foundation
import Models
import Sharding

/// Saving parameters out of the flat unit buffers, by HF tensor name (loading is `ModelIO.ModelWeights.fill`).
public enum ModelCheckpoint {
    /// Writes `config.json` and `model.safetensors` (fp32, HF tensor names) into `directory`.
    /// Every rank must call it (stage 3 gathers each unit, one at a time, in file order); rank 0 writes
    /// (``ModelExport/writeSafetensors(engine:to:)``), so no rank ever holds the whole model.
    /// `overwrite`: replace an existing `model.safetensors` (a resumed run that writes its final model again).
    public static func save(engine: ZeroEngine, config: ModelConfig, to directory: URL, overwrite: Bool = false) throws {
        if engine.communicator.rank == 0 {
            try FileOperation.perform("create directory", path: directory.path) {
                try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
            }
            AtomicFile.removeLeftovers(in: directory)  // of a save that was killed
        }
        try ModelExport.writeSafetensors(engine: engine, to: directory.appendingPathComponent("model.safetensors"), overwrite: overwrite)
        guard engine.communicator.rank == 0 else { return }
        try ModelExport.writeConfig(config, to: directory)
    }

    /// Refuses to write into an existing non-empty directory: nothing the user had is overwritten.
    /// Temporaries a killed save left (``TrainingCheckpointFormat/isTemporary(_:)``, and our writers'
    /// ``AtomicFile/isLeftover(_:)`` files such as `.model.safetensors.tmp-Ab12Cd`) do not count: the
    /// next save removes them. `resumable`: the message suggests `--resume latest` (HF Trainer's rule: a
    /// non-empty output directory is only reused when resuming).
    public static func checkFreshDirectory(_ path: String?, resumable: Bool = false) throws {
        guard let path else { return }
        let contents = ((try? FileManager.default.contentsOfDirectory(atPath: path)) ?? []).filter { !TrainingCheckpointFormat.isTemporary($0) && !AtomicFile.isLeftover($0) }
        if !contents.isEmpty {
            let hint = resumable && contents.contains(where: { TrainingCheckpointFormat.step(ofDirectoryNamed: $0) != nil })
                ? ": it holds checkpoints of an earlier run; pass --resume latest to continue it, or choose a new directory"
                : resumable ? ": choose a new one (or pass --resume latest to continue a run saved there)" : ": choose a new one"
            throw OptionError(message: "output directory \(path) exists and is not empty\(hint)")
        }
    }

    /// Refuses to resume into a directory that is not a run's: a resumed run writes its checkpoints and
    /// final model (`model.safetensors`, `config.json`, tokenizer files) into `--output-dir`, so an
    /// existing non-empty one must hold a `checkpoint-STEP` folder (complete or not) of an earlier run.
    /// Without this, `--resume PATH --output-dir DIR` overwrote the files of any directory — the
    /// `--model` directory's `model.safetensors` included. Temporaries of a killed save do not count.
    public static func checkRunDirectory(_ path: String) throws {
        let contents = ((try? FileManager.default.contentsOfDirectory(atPath: path)) ?? [])
            .filter { !TrainingCheckpointFormat.isTemporary($0) && !AtomicFile.isLeftover($0) }
        guard !contents.isEmpty, !contents.contains(where: { TrainingCheckpointFormat.step(ofDirectoryNamed: $0) != nil }) else { return }
        throw OptionError(message: "output directory \(path) exists, is not empty and holds no checkpoint of a run "
            + "(\(contents.sorted().prefix(3).joined(separator: ", "))): a resumed run writes its checkpoints and final model there; "
            + "choose a new or empty --output-dir")
    }
}
