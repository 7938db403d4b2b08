import Checkpoints
import Foundation
import Models

/// A checkpoint's tensors seen through a model's ``ParameterLayout``: exactly the layout's tensors, by HF
/// name, each checked once for presence and shape. This is the one place that checks names and shapes;
/// loading (``ModelSource/initializer(seed:)``) and exporting read through it without checking again.
///
/// The rules, those of transformers 5 (`PreTrainedModel.tie_weights`, `_adjust_missing_and_unexpected_keys`):
/// - `tie_word_embeddings: true` with both `model.embed_tokens.weight` and `lm_head.weight` stored: tied
///   only when the two are exactly equal (`torch.equal`); when they differ, transformers warns and does
///   not tie, so the model keeps both — the resolved config says `tie_word_embeddings: false`, with a warning.
///   With only `lm_head.weight` stored, the embedding is read from it (transformers ties the other way round).
/// - Tensors no layer uses are an error listing them (transformers only warns; a model silently smaller
///   than its file — a GGUF whose `block_count` is below its layers, a stray name — is never what was meant),
///   except the `rotary_emb.inv_freq` buffers of old checkpoints, which transformers drops without a word.
public struct ModelWeights: TensorSource {
    /// The stored tensors (safetensors file or shards, or a GGUF under HF names).
    public let stored: any TensorSource
    /// The layout's tensors, under their layout names, with the stored shape and dtype.
    public let tensors: [String: TensorInfo]
    /// Layout name → stored name, where they differ (the embedding read from a tied `lm_head.weight`).
    let storedNames: [String: String]

    public var location: String { stored.location }

    /// Stored tensors that transformers drops without a warning: non-persistent buffers of old checkpoints.
    public static func isIgnoredBuffer(_ name: String) -> Bool {
        name.hasSuffix("rotary_emb.inv_freq")
    }

    /// Checks `stored` against `config`'s layout (see the type's rules).
    ///
    /// - Parameter unmapped: names of stored tensors that have no HF name (a GGUF's unknown tensors): unused too.
    /// - Returns: the checked weights, the config the weights describe (`tie_word_embeddings` cleared when the
    ///   stored head differs from the embedding) and the warnings to show.
    /// - Throws: `CheckpointError` (`.tensorNotFound`, `.inconsistentTensor`) for a missing or misshapen tensor,
    ///   `ModelSourceError` listing the tensors no layer uses.
    public static func check(_ stored: any TensorSource, config: ModelConfig, unmapped: [String] = []) throws
        -> (weights: ModelWeights, config: ModelConfig, warnings: [String])
    {
        var config = config
        var warnings: [String] = []
        var storedNames: [String: String] = [:]
        var duplicates: Set<String> = []
        let embedding = "model.embed_tokens.weight", head = "lm_head.weight"
        if config.tieWordEmbeddings, let headInfo = stored.tensors[head] {
            if let embeddingInfo = stored.tensors[embedding] {
                if try equalTensors(stored, embeddingInfo, headInfo) {
                    duplicates.insert(head)
                } else {
                    warnings.append(
                        "\(stored.location): tie_word_embeddings is true but \(head) and \(embedding) are both stored and differ: "
                            + "they are NOT tied (as transformers does); set tie_word_embeddings to false in config.json to silence this warning")
                    config.tieWordEmbeddings = false
                }
            } else {
                storedNames[embedding] = head
            }
        }

        // More layers than stored is refused before a layout of that many is built; fewer is reported
        // below, with the unused names.
        try config.checkLayers(against: stored.tensors.keys, location: stored.location)

        var tensors: [String: TensorInfo] = [:]
        var used: Set<String> = duplicates
        for unit in ParameterLayout(config: config).units {
            for tensor in unit.tensors {
                let name = storedNames[tensor.name] ?? tensor.name
                guard var info = stored.tensors[name] else {
                    throw CheckpointError(.tensorNotFound, path: stored.location, tensor: tensor.name,
                                          expected: "a tensor of shape \(tensor.shape) (the config's architecture)",
                                          found: "no such tensor")
                }
                guard info.shape == tensor.shape else {
                    throw CheckpointError(.inconsistentTensor, path: stored.location, tensor: name,
                                          expected: "shape \(tensor.shape) (from the config)", found: "shape \(info.shape)")
                }
                info.name = tensor.name
                tensors[tensor.name] = info
                used.insert(name)
            }
        }

        let unused = (stored.tensors.keys.filter { !used.contains($0) && !isIgnoredBuffer($0) } + unmapped).sorted()
        if !unused.isEmpty {
            let shown = unused.prefix(12).joined(separator: ", ") + (unused.count > 12 ? ", … (\(unused.count) in all)" : "")
            let layers = unused.compactMap(layerIndex).filter { $0 >= config.numHiddenLayers }
            var message = "\(unused.count) stored tensor\(unused.count == 1 ? "" : "s") that no layer of the model uses: \(shown)"
            if let highest = layers.max() {
                message += "; the config has \(config.numHiddenLayers) layers (num_hidden_layers / block_count) but the file holds layer \(highest)"
            }
            throw ModelSourceError(path: stored.location, message: message + " (a model smaller than its file is refused)")
        }
        return (ModelWeights(stored: stored, tensors: tensors, storedNames: storedNames), config, warnings)
    }

    /// `i` of an HF name `model.layers.i.…`.
    static func layerIndex(_ name: String) -> Int? {
        let parts = name.split(separator: ".")
        guard parts.count > 2, parts[0] == "model", parts[1] == "layers" else { return nil }
        return Int(parts[2])
    }

    /// Whether two stored tensors have the same shape and exactly the same values (`torch.equal`), read in chunks.
    static func equalTensors(_ source: any TensorSource, _ a: TensorInfo, _ b: TensorInfo) throws -> Bool {
        guard a.shape == b.shape else { return false }
        let count = a.elementCount, chunk = 1 << 18
        var left = [Float](repeating: 0, count: min(chunk, count)), right = left
        var start = 0
        while start < count {
            let range = start..<min(count, start + chunk)
            try left.withUnsafeMutableBufferPointer {
                try source.read(a.name, elements: range, into: UnsafeMutableBufferPointer(rebasing: $0[0..<range.count]))
            }
            try right.withUnsafeMutableBufferPointer {
                try source.read(b.name, elements: range, into: UnsafeMutableBufferPointer(rebasing: $0[0..<range.count]))
            }
            if left[0..<range.count] != right[0..<range.count] { return false }
            start = range.upperBound
        }
        return true
    }

    /// Fills elements `range` of unit `unit` of `layout` (the layout these weights were checked against),
    /// reading only the overlapping part of each tensor: under stage 3 a rank reads only its shards.
    /// - Precondition: `destination.count == range.count`.
    public func fill(_ destination: UnsafeMutableBufferPointer<Float>, unit: Int, elements range: Range<Int>,
                     layout: ParameterLayout) throws {
        precondition(destination.count == range.count, "ModelWeights.fill: destination holds \(destination.count), range has \(range.count)")
        destination.update(repeating: 0)
        for tensor in layout.units[unit].tensors {
            let overlap = range.clamped(to: tensor.range)
            if overlap.isEmpty { continue }
            let local = (overlap.lowerBound - range.lowerBound)..<(overlap.upperBound - range.lowerBound)
            try read(tensor.name, elements: (overlap.lowerBound - tensor.offset)..<(overlap.upperBound - tensor.offset),
                     into: UnsafeMutableBufferPointer(rebasing: destination[local]))
        }
    }

    public func read(_ name: String, elements: Range<Int>, into destination: UnsafeMutableBufferPointer<Float>) throws {
        guard tensors[name] != nil else {
            throw CheckpointError(.tensorNotFound, path: location, tensor: name,
                                  expected: "a tensor of the model's layout", found: "no such tensor")
        }
        try stored.read(storedNames[name] ?? name, elements: elements, into: destination)
    }
}
