import Checkpoints
import Foundation
import Models

/// A llama.cpp GGUF checkpoint seen as an HF model: its `ModelConfig` from the metadata, and its
/// tensors under HF names, in HF row order, dequantised to Float.
///
/// Supported architectures: `llama` (Llama 2/3, SmolLM2, Mistral-style) and `qwen2`. The tensor
/// names map one to one (`token_embd` → `model.embed_tokens`, `blk.i.attn_q` →
/// `model.layers.i.self_attn.q_proj`, …; see ``huggingFaceName(ofGGUFTensor:)``).
///
/// llama.cpp's converter permutes the rows of the Llama `attn_q` and `attn_k` weights (and biases)
/// so that ggml's RoPE can rotate adjacent pairs: GGUF row `h·d + 2i + j` holds HF row
/// `h·d + j·d/2 + i` (head `h`, `d` the head width, `i < d/2`, `j ∈ {0, 1}`). Reads through this
/// type undo it, so the rows come out in HF's rotate-half order. Qwen2 GGUFs are not permuted
/// (`Qwen2Model` in `convert_hf_to_gguf.py` does not derive from `LlamaModel`; transformers'
/// GGUF loader likewise reverses the permutation only for `llama`).
///
/// Ranged reads stay ranged: an HF element range maps to the GGUF rows that hold it, and only those
/// rows' bytes (blocks) are decoded, so a ZeRO-3 rank reads only its own shards.
public struct GGUFModel: TensorSource, Sendable {
    /// The underlying file (metadata, tokenizer, GGUF-named tensors).
    public let file: GGUFFile
    /// The architecture of the file, as an HF config.
    public let config: ModelConfig
    /// Every exposed tensor under its HF name, with the HF shape and the stored dtype.
    public let tensors: [String: TensorInfo]
    /// HF name → GGUF name.
    public let ggufNames: [String: String]
    /// HF names of tensors whose rows are permuted in the file, with the head count of the permutation.
    let permutedHeads: [String: Int]
    /// GGUF names of the file's tensors that have no HF name (``ModelWeights`` refuses them as unused).
    public let unmappedTensors: [String]

    public var location: String { file.location }

    /// The GGUF architectures this loader understands.
    public static let supportedArchitectures = ["llama", "qwen2"]

    /// Opens `url` and builds the config and the name map; throws `CheckpointError` for a bad file or
    /// metadata (naming the key, what was expected and what was found).
    public init(url: URL) throws {
        try self.init(file: GGUFFile(url: url))
    }

    public init(file: GGUFFile) throws {
        self.file = file
        let config = try ModelConfig(gguf: file)
        self.config = config
        var tensors: [String: TensorInfo] = [:]
        var names: [String: String] = [:]
        var permuted: [String: Int] = [:]
        var unmapped: [String] = []
        for (ggufName, info) in file.tensors {
            guard let name = Self.huggingFaceName(ofGGUFTensor: ggufName) else { unmapped.append(ggufName); continue }
            var renamed = info
            renamed.name = name
            tensors[name] = renamed
            names[name] = ggufName
            if config.modelType == "llama" {
                if ggufName.contains(".attn_q.") { permuted[name] = config.numAttentionHeads }
                if ggufName.contains(".attn_k.") { permuted[name] = config.numKeyValueHeads }
            }
        }
        self.tensors = tensors
        self.ggufNames = names
        self.permutedHeads = permuted
        self.unmappedTensors = unmapped.sorted()
    }

    /// The HF name of a GGUF tensor of a Llama/Qwen2 file, or nil for tensors without one
    /// (e.g. `rope_freqs.weight`).
    public static func huggingFaceName(ofGGUFTensor name: String) -> String? {
        switch name {
        case "token_embd.weight": return "model.embed_tokens.weight"
        case "output_norm.weight": return "model.norm.weight"
        case "output.weight": return "lm_head.weight"
        default: break
        }
        let parts = name.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 4, parts[0] == "blk", let layer = Int(parts[1]), layer >= 0,
              parts[3] == "weight" || parts[3] == "bias" else { return nil }
        let module: String
        switch parts[2] {
        case "attn_norm": module = "input_layernorm"
        case "ffn_norm": module = "post_attention_layernorm"
        case "attn_q": module = "self_attn.q_proj"
        case "attn_k": module = "self_attn.k_proj"
        case "attn_v": module = "self_attn.v_proj"
        case "attn_output": module = "self_attn.o_proj"
        case "ffn_gate": module = "mlp.gate_proj"
        case "ffn_up": module = "mlp.up_proj"
        case "ffn_down": module = "mlp.down_proj"
        default: return nil
        }
        return "model.layers.\(layer).\(module).\(parts[3])"
    }

    /// The GGUF row that holds HF row `row` of a tensor permuted with `heads` heads of `rows / heads` rows.
    ///
    /// With `d = rows / heads`, HF row `h·d + j·d/2 + i` is GGUF row `h·d + 2i + j`.
    @inline(__always)
    public static func permutedRow(_ row: Int, rows: Int, heads: Int) -> Int {
        let d = rows / heads, half = d / 2
        let h = row / d, within = row % d
        let j = within / half, i = within % half
        return h * d + 2 * i + j
    }

    public func read(_ name: String, elements: Range<Int>, into destination: UnsafeMutableBufferPointer<Float>) throws {
        precondition(destination.count == elements.count, "GGUFModel.read: destination holds \(destination.count), range has \(elements.count)")
        guard let info = tensors[name], let ggufName = ggufNames[name] else {
            throw CheckpointError(.tensorNotFound, path: location, tensor: name,
                                  expected: "an HF tensor name this GGUF maps (e.g. 'model.layers.0.self_attn.q_proj.weight')",
                                  found: "no GGUF tensor maps to it")
        }
        guard let heads = permutedHeads[name] else {
            try file.read(ggufName, elements: elements, into: destination)
            return
        }
        guard elements.lowerBound >= 0, elements.upperBound <= info.elementCount else {
            throw CheckpointError(.elementRangeOutOfBounds, path: location, tensor: name,
                                  expected: "a range within 0..<\(info.elementCount) (shape \(info.shape))",
                                  found: "\(elements.lowerBound)..<\(elements.upperBound)")
        }
        let rows = info.shape.first ?? 1
        let columns = rows == 0 ? 0 : info.elementCount / rows
        guard rows % heads == 0, (rows / heads) % 2 == 0 else {
            throw CheckpointError(.inconsistentTensor, path: location, tensor: ggufName,
                                  expected: "rows divisible into \(heads) heads of an even width",
                                  found: "shape \(info.shape)")
        }
        // Row by row: each HF row's columns come from one GGUF row.
        var position = elements.lowerBound
        while position < elements.upperBound {
            let row = position / columns, column = position % columns
            let end = min(elements.upperBound, (row + 1) * columns)
            let source = Self.permutedRow(row, rows: rows, heads: heads) * columns + column
            let local = (position - elements.lowerBound)..<(end - elements.lowerBound)
            try file.read(ggufName, elements: source..<(source + end - position),
                          into: UnsafeMutableBufferPointer(rebasing: destination[local]))
            position = end
        }
    }
}

extension ModelConfig {
    /// The HF config of a GGUF file, from its `general.architecture`-prefixed metadata.
    ///
    /// | GGUF key | config key |
    /// |---|---|
    /// | `{arch}.block_count` | `num_hidden_layers` (at most the `blk.N` groups present; blocks beyond it are an error listing them) |
    /// | `{arch}.embedding_length` | `hidden_size` |
    /// | `{arch}.feed_forward_length` | `intermediate_size` |
    /// | `{arch}.attention.head_count` / `head_count_kv` | `num_attention_heads` / `num_key_value_heads` |
    /// | `{arch}.attention.key_length` | `head_dim` (when not `hidden_size / heads`) |
    /// | `{arch}.attention.layer_norm_rms_epsilon` | `rms_norm_eps` |
    /// | `{arch}.rope.freq_base` | `rope_theta` (default 10000) |
    /// | `{arch}.context_length` | `max_position_embeddings` |
    /// | rows of `token_embd.weight` | `vocab_size` (checked against `tokenizer.ggml.tokens`) |
    /// | no `output.weight` | `tie_word_embeddings` |
    /// | `tokenizer.ggml.bos_token_id` / `eos_token_id` | `bos_token_id` / `eos_token_id` |
    ///
    /// Throws `CheckpointError` (`.malformedHeader` naming the key) for missing or inconsistent
    /// metadata and for features we do not implement (RoPE scaling, partial rotary, o_proj/MLP biases,
    /// other architectures), and for sizes outside ``ModelConfig/bounds`` — all before anything is sized
    /// from them. (transformers' GGUF loader reads no RoPE scaling for llama/qwen2 either.)
    public init(gguf file: GGUFFile) throws {
        let path = file.location
        guard let arch = file.architecture else {
            throw CheckpointError(.malformedHeader, path: path, expected: "metadata key general.architecture",
                                  found: "no such key")
        }
        guard GGUFModel.supportedArchitectures.contains(arch) else {
            throw CheckpointError(.malformedHeader, path: path,
                                  expected: "general.architecture one of \(GGUFModel.supportedArchitectures.joined(separator: ", "))",
                                  found: "'\(arch)'")
        }
        func value(_ key: String) -> GGUFValue? { file.metadata["\(arch).\(key)"] }
        func integer(_ key: String) throws -> Int {
            guard let stored = value(key) else {
                throw CheckpointError(.malformedHeader, path: path, expected: "metadata key \(arch).\(key)", found: "no such key")
            }
            guard let v = stored.int, v > 0 else {
                throw CheckpointError(.malformedHeader, path: path, expected: "\(arch).\(key) a positive integer",
                                      found: "\(stored)")
            }
            return v
        }
        func number(_ key: String) throws -> Double? {
            guard let stored = value(key) else { return nil }
            guard let v = stored.double, v.isFinite, v > 0 else {
                throw CheckpointError(.malformedHeader, path: path, expected: "\(arch).\(key) a positive number", found: "\(stored)")
            }
            return v
        }
        let layers = try integer("block_count")
        // Sizes are checked against the tensors present before anything is built from them: more layers
        // than the file holds is refused here; fewer leaves blocks no layer uses, which ModelWeights lists.
        let blocks = Set(file.tensors.keys.compactMap { name -> Int? in
            name.hasPrefix("blk.") ? Int(name.dropFirst(4).prefix { $0 != "." }) : nil
        })
        guard layers <= blocks.count else {
            throw CheckpointError(.malformedHeader, path: path,
                                  expected: "\(arch).block_count equal to the blk.N tensor groups present (\(blocks.count), N up to \(blocks.max() ?? -1))",
                                  found: "\(layers)")
        }
        let hidden = try integer("embedding_length")
        let feedForward = try integer("feed_forward_length")
        let heads = try integer("attention.head_count")
        let keyValueHeads = value("attention.head_count_kv") == nil ? heads : try integer("attention.head_count_kv")
        guard let epsilon = try number("attention.layer_norm_rms_epsilon") else {
            throw CheckpointError(.malformedHeader, path: path, expected: "metadata key \(arch).attention.layer_norm_rms_epsilon",
                                  found: "no such key")
        }
        let theta = try number("rope.freq_base") ?? 10000
        // Absent: the config class default, as transformers' GGUF loader leaves it (LlamaConfig 2048, Qwen2Config 32768).
        let context = value("context_length") == nil ? (arch == "qwen2" ? 32768 : 2048) : try integer("context_length")
        let keyLength = value("attention.key_length") == nil ? nil : try integer("attention.key_length")
        let valueLength = value("attention.value_length") == nil ? nil : try integer("attention.value_length")
        let headDimension = keyLength ?? hidden / heads
        if let valueLength, valueLength != headDimension {
            throw CheckpointError(.malformedHeader, path: path, expected: "\(arch).attention.value_length equal to key_length (\(headDimension))",
                                  found: "\(valueLength)")
        }
        if value("rope.dimension_count") != nil {
            let rotary = try integer("rope.dimension_count")
            guard rotary == headDimension else {
                throw CheckpointError(.malformedHeader, path: path,
                                      expected: "\(arch).rope.dimension_count equal to the head width \(headDimension) (partial rotary is not implemented)",
                                      found: "\(rotary)")
            }
        }
        if let scaling = value("rope.scaling.type")?.string, scaling != "none" {
            throw CheckpointError(.malformedHeader, path: path, expected: "\(arch).rope.scaling.type none (RoPE scaling is not implemented)",
                                  found: "'\(scaling)'")
        }
        if file.tensors["rope_freqs.weight"] != nil {
            throw CheckpointError(.malformedHeader, path: path, tensor: "rope_freqs.weight",
                                  expected: "no per-frequency RoPE factors (Llama 3.1 RoPE scaling is not implemented)",
                                  found: "the tensor")
        }
        guard let embedding = file.tensors["token_embd.weight"] else {
            throw CheckpointError(.tensorNotFound, path: path, tensor: "token_embd.weight",
                                  expected: "the token embedding", found: "no such tensor")
        }
        guard embedding.shape.count == 2, embedding.shape[1] == hidden else {
            throw CheckpointError(.inconsistentTensor, path: path, tensor: "token_embd.weight",
                                  expected: "shape [vocab, \(hidden)]", found: "shape \(embedding.shape)")
        }
        let vocabulary = embedding.shape[0]
        if let tokens = file.metadata["tokenizer.ggml.tokens"]?.array, tokens.count > vocabulary {
            throw CheckpointError(.inconsistentTensor, path: path, tensor: "token_embd.weight",
                                  expected: "at least one row per token of tokenizer.ggml.tokens (\(tokens.count))",
                                  found: "\(vocabulary) rows")
        }
        let bias = arch == "qwen2" || file.tensors["blk.0.attn_q.bias"] != nil
        if let name = ["blk.0.attn_output.bias", "blk.0.ffn_gate.bias", "blk.0.ffn_up.bias", "blk.0.ffn_down.bias"].first(where: { file.tensors[$0] != nil }) {
            throw CheckpointError(.malformedHeader, path: path, tensor: name,
                                  expected: "no o_proj or MLP biases (not implemented)", found: "the tensor")
        }
        self.init(modelType: arch, vocabSize: vocabulary, hiddenSize: hidden, intermediateSize: feedForward,
                  numHiddenLayers: layers, numAttentionHeads: heads, numKeyValueHeads: keyValueHeads,
                  headDim: headDimension == hidden / heads ? nil : headDimension,
                  rmsNormEps: Self.shortestDecimal(epsilon), ropeTheta: theta, maxPositionEmbeddings: context,
                  tieWordEmbeddings: file.tensors["output.weight"] == nil, attentionBias: bias,
                  bosTokenID: file.metadata["tokenizer.ggml.bos_token_id"]?.int,
                  eosTokenID: file.metadata["tokenizer.ggml.eos_token_id"]?.int)
        do { try validate() } catch {
            throw CheckpointError(.malformedHeader, path: path, expected: "a valid model configuration", found: "\(error)")
        }
    }

    /// GGUF stores `1e-5` as the float32 `9.99999974738e-06`; the config gets the shortest decimal
    /// that rounds to the same float32 (`1e-05`), as HF's own config has it.
    static func shortestDecimal(_ value: Double) -> Double {
        Double("\(Float(value))") ?? value
    }
}
