import Checkpoints
import Foundation
import ModelIO
import Models
import Sharding
import Tokenizers

/// Writing HF model directories (`config.json`, `model.safetensors`, `generation_config.json`, the
/// tokenizer files) and loading a ``ModelSource`` whole into one process.
public enum ModelExport {
    /// Fills parameter ranges of a model: from the checked weights by HF name (ranged reads), or random
    /// from `seed` for a preset or a bare config. The same as ``ModelSource/initializer(seed:)``.
    public static func initializer(for source: ModelSource, seed: UInt64)
        -> (_ unit: Int, _ elements: Range<Int>, _ destination: UnsafeMutableBufferPointer<Float>) throws -> Void
    {
        source.initializer(seed: seed)
    }

    /// The whole model in this process (evaluation on one rank, generation), without gradients.
    public static func denseStore(for source: ModelSource, seed: UInt64 = 42) throws -> DenseUnitStore {
        let store = DenseUnitStore(layout: ParameterLayout(config: source.config), withGradients: false)
        let fill = source.initializer(seed: seed)
        for (index, unit) in store.layout.units.enumerated() {
            try fill(index, 0..<unit.count, store.parameters[index].pointer)
        }
        return store
    }

    /// Exports `source` as an HF directory: `config.json`, `model.safetensors` (F32, HF names, streamed
    /// tensor by tensor — the whole model is never in memory), `generation_config.json` and the
    /// tokenizer files (see ``writeTokenizerFiles(from:to:)``). Returns the names of the files written.
    /// Refuses an existing non-empty directory.
    @discardableResult
    public static func export(_ source: ModelSource, seed: UInt64 = 42, to directory: URL) throws -> [String] {
        try ModelCheckpoint.checkFreshDirectory(directory.path)
        try FileOperation.perform("create directory", path: directory.path) {
            try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        }
        AtomicFile.removeLeftovers(in: directory)  // of an export that was killed
        let layout = ParameterLayout(config: source.config)
        var location: [String: (unit: Int, offset: Int)] = [:]
        for (index, unit) in layout.units.enumerated() {
            for tensor in unit.tensors { location[tensor.name] = (index, tensor.offset) }
        }
        let fill = source.initializer(seed: seed)
        try SafetensorsWriter.write(layout: layout.units.flatMap { $0.tensors.map { ($0.name, $0.shape) } },
                                    metadata: ["format": "pt"], to: directory.appendingPathComponent("model.safetensors")) {
            name, elements, destination in
            let (unit, offset) = location[name]!
            try fill(unit, (offset + elements.lowerBound)..<(offset + elements.upperBound), destination)
        }
        try writeConfig(source.config, to: directory)
        return ["config.json", "model.safetensors"] + (try writeSidecars(from: source, config: source.config, to: directory))
    }

    /// `config.json` (HF keys, `torch_dtype` float32).
    public static func writeConfig(_ config: ModelConfig, to directory: URL) throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        let url = directory.appendingPathComponent("config.json")
        let data = try encoder.encode(config)
        try AtomicFile.write(data, to: url)
    }

    /// `generation_config.json` and the tokenizer files: what `train --output-dir` and `export` write
    /// besides the weights. Returns the names of the files written.
    ///
    /// The model directory's own files are copied byte for byte from the bytes ``ModelSource/files`` already
    /// holds (no file is opened twice); a `generation_config.json` is otherwise made from `config`'s BOS/EOS.
    @discardableResult
    public static func writeSidecars(from source: ModelSource, config: ModelConfig, to directory: URL) throws -> [String] {
        let generation = directory.appendingPathComponent("generation_config.json")
        if let original = try source.files?.data("generation_config.json") {
            try AtomicFile.write(original, to: generation)
        } else {
            var fields: [String: Any] = ["_from_model_config": true]
            if let bos = config.bosTokenID { fields["bos_token_id"] = bos }
            if let eos = config.eosTokenID { fields["eos_token_id"] = eos.ids.count == 1 ? eos.ids[0] : eos.ids }
            let data = try JSONSerialization.data(withJSONObject: fields, options: [.prettyPrinted, .sortedKeys])
            try AtomicFile.write(data, to: generation)
        }
        return ["generation_config.json"] + (try writeTokenizerFiles(from: source, to: directory))
    }

    /// The tokenizer files a model directory may hold, which an export copies.
    public static let tokenizerFileNames = ["tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.json",
                                            "merges.txt", "chat_template.jinja", "chat_template.json"]

    /// The tokenizer files of the model, written into `directory`; returns their names (none for a preset).
    ///
    /// An HF directory's tokenizer files are copied as they are (byte for byte: nothing is re-serialised);
    /// a GGUF's are rebuilt from its metadata (``GGUFTokenizerFiles``), chat template included.
    public static func writeTokenizerFiles(from source: ModelSource, to directory: URL) throws -> [String] {
        if let gguf = source.gguf {
            let files = try GGUFTokenizerFiles.make(from: gguf.metadata, source: gguf.location)
            for (name, data) in [("tokenizer.json", files.tokenizerJSON), ("tokenizer_config.json", files.tokenizerConfigJSON)] {
                let url = directory.appendingPathComponent(name)
                try AtomicFile.write(data, to: url)
            }
            return ["tokenizer.json", "tokenizer_config.json"]
        }
        guard let files = source.files else { return [] }
        var copied: [String] = []
        for name in tokenizerFileNames {
            guard let data = try files.data(name) else { continue }
            let to = directory.appendingPathComponent(name)
            try AtomicFile.write(data, to: to)
            copied.append(name)
        }
        return copied
    }

    /// Writes `model.safetensors` from a (possibly sharded) engine, one unit at a time: every rank walks
    /// the tensors in file order and joins the gather of each unit as the walk reaches it; rank 0
    /// writes. No rank holds more than one gathered unit (plus the writer's chunk).
    public static func writeSafetensors(engine: ZeroEngine, to url: URL, overwrite: Bool = false) throws {
        try writeSafetensors(parameters: engine.parameters, to: url, overwrite: overwrite)
    }

    /// As ``writeSafetensors(engine:to:overwrite:)``, from the parameters alone. `overwrite`: replace an
    /// existing file (a resumed run writing its final model again).
    public static func writeSafetensors(parameters engine: ShardedParameters, to url: URL, overwrite: Bool = false) throws {
        let layout = engine.layout
        var location: [String: (unit: Int, tensor: ParameterTensor)] = [:]
        for (index, unit) in layout.units.enumerated() {
            for tensor in unit.tensors { location[tensor.name] = (index, tensor) }
        }
        let tensors = layout.units.flatMap { $0.tensors.map { (name: $0.name, shape: $0.shape) } }
        var currentUnit = -1
        var current: [Float] = []
        func gather(_ unit: Int) throws {
            if unit != currentUnit {
                current = []
                current = try engine.fullParameters(unit: unit)
                currentUnit = unit
            }
        }
        // Every rank walks the writer's own file order, so all join the same gathers in the same order.
        guard engine.communicator.rank == 0 else {
            for tensor in SafetensorsWriter.fileOrder(tensors) { try gather(location[tensor.name]!.unit) }
            return
        }
        try SafetensorsWriter.write(layout: tensors, metadata: ["format": "pt"], to: url, overwrite: overwrite) { name, elements, destination in
            let (unit, tensor) = location[name]!
            try gather(unit)
            current.withUnsafeBufferPointer { values in
                _ = destination.initialize(from: values[(tensor.offset + elements.lowerBound)..<(tensor.offset + elements.upperBound)])
            }
        }
    }
}
