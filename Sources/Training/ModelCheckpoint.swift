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
    /// Every rank must call it (stage 3 gathers each unit); rank 0 writes.
    public static func save(engine: ZeroEngine, config: ModelConfig, to directory: URL) throws {
        var tensors: [(name: String, shape: [Int], values: [Float])] = []
        for (index, unit) in engine.layout.units.enumerated() {
            let values = try engine.fullParameters(unit: index)
            guard engine.communicator.rank == 0 else { continue }
            for tensor in unit.tensors { tensors.append((tensor.name, tensor.shape, Array(values[tensor.range]))) }
        }
        guard engine.communicator.rank == 0 else { return }
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        try encoder.encode(config).write(to: directory.appendingPathComponent("config.json"), options: .atomic)
        try writeSafetensors(tensors, to: directory.appendingPathComponent("model.safetensors"))
    }

    static func writeSafetensors(_ tensors: [(name: String, shape: [Int], values: [Float])], to url: URL) throws {
        // Keep every array alive while the writer reads through the pointers.
        func build(_ index: Int, _ pointers: [(name: String, shape: [Int], data: UnsafeBufferPointer<Float>)]) throws {
            if index == tensors.count {
                try SafetensorsWriter.write(pointers, metadata: ["format": "pt"], to: url, overwrite: false)
                return
            }
            try tensors[index].values.withUnsafeBufferPointer { buffer in
                try build(index + 1, pointers + [(tensors[index].name, tensors[index].shape, buffer)])
            }
        }
        try build(0, [])
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
