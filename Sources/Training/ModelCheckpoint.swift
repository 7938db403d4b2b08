import Checkpoints
import Collectives
import Foundation
import Models
import Sharding

/// Loading parameters into, and saving them out of, the flat unit buffers, by HF tensor name.
public enum ModelCheckpoint {
    /// Fills elements `range` of unit `unit` from `source`, reading only the overlapping part of each
    /// tensor (so under stage 3 a rank reads only its shards). Shapes must match the layout exactly.
    public static func fill(
        _ destination: UnsafeMutableBufferPointer<Float>, unit: Int, elements range: Range<Int>,
        layout: ParameterLayout, source: any TensorSource, sourcePath: String
    ) throws {
        destination.update(repeating: 0)
        for tensor in layout.units[unit].tensors {
            let overlap = range.clamped(to: tensor.range)
            if overlap.isEmpty { continue }
            guard let info = source.tensors[tensor.name] else {
                throw CheckpointError(.tensorNotFound, path: sourcePath, tensor: tensor.name,
                                      expected: "a tensor of shape \(tensor.shape)", found: "no such tensor")
            }
            guard info.shape == tensor.shape else {
                throw CheckpointError(.inconsistentTensor, path: sourcePath, tensor: tensor.name,
                                      expected: "shape \(tensor.shape)", found: "shape \(info.shape)")
            }
            let local = (overlap.lowerBound - range.lowerBound)..<(overlap.upperBound - range.lowerBound)
            try source.read(tensor.name, elements: (overlap.lowerBound - tensor.offset)..<(overlap.upperBound - tensor.offset),
                            into: UnsafeMutableBufferPointer(rebasing: destination[local]))
        }
    }

    /// Writes `config.json` and `model.safetensors` (fp32, HF tensor names) into `directory`.
    /// Every rank must call it (stage 3 gathers each unit, one at a time, in file order); rank 0 writes
    /// (``ModelExport/writeSafetensors(engine:to:)``), so no rank ever holds the whole model.
    public static func save(engine: ZeroEngine, config: ModelConfig, to directory: URL) throws {
        if engine.communicator.rank == 0 {
            try FileOperation.perform("create directory", path: directory.path) {
                try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
            }
        }
        try ModelExport.writeSafetensors(engine: engine, to: directory.appendingPathComponent("model.safetensors"))
        guard engine.communicator.rank == 0 else { return }
        try ModelExport.writeConfig(config, to: directory)
    }

    /// Refuses to write into an existing non-empty directory: nothing the user had is overwritten.
    public static func checkFreshDirectory(_ path: String?) throws {
        guard let path else { return }
        let contents = (try? FileManager.default.contentsOfDirectory(atPath: path)) ?? []
        if !contents.isEmpty {
            throw OptionError(message: "output directory \(path) exists and is not empty: choose a new one")
        }
    }
}
