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
    public static func save(engine: ZeroEngine, config: ModelConfig, to directory: URL) throws {
        if engine.communicator.rank == 0 {
            try FileOperation.perform("create directory", path: directory.path) {
                try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
            }
            AtomicFile.removeLeftovers(in: directory)  // of a save that was killed
        }
        try ModelExport.writeSafetensors(engine: engine, to: directory.appendingPathComponent("model.safetensors"))
        guard engine.communicator.rank == 0 else { return }
        try ModelExport.writeConfig(config, to: directory)
    }

    /// Refuses to write into an existing non-empty directory: nothing the user had is overwritten.
    /// The temporary files of a killed save of ours (``AtomicFile/isLeftover(_:)``, e.g.
    /// `.model.safetensors.tmp-Ab12Cd`) do not count; the next save deletes them.
    public static func checkFreshDirectory(_ path: String?) throws {
        guard let path else { return }
        let contents = ((try? FileManager.default.contentsOfDirectory(atPath: path)) ?? []).filter { !AtomicFile.isLeftover($0) }
        if !contents.isEmpty {
            throw OptionError(message: "output directory \(path) exists and is not empty: choose a new one")
        }
    }
}
