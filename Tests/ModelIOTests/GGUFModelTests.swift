import Checkpoints
import Foundation
import ModelIO
import Models
import Testing

/// GGUF → HF: config from metadata, names, and llama.cpp's q/k row permutation undone, against the
/// tiny models transformers saved (their GGUFs are written like convert_hf_to_gguf.py writes them and
/// load back in transformers to the same tensors; see tools/generate_model_fixtures.py).
@Suite struct GGUFModelTests {
    static let kinds = ["tiny-llama", "tiny-qwen2"]

    @Test(arguments: kinds) func configFromMetadataEqualsConfigJSON(_ name: String) throws {
        let gguf = try GGUFModel(url: Fixtures.url("\(name)/\(name).gguf")).config
        let hf = try ModelSource.loadConfig(from: Fixtures.url("\(name)/config.json"))
        #expect(gguf.modelType == hf.modelType)
        #expect(gguf.vocabSize == hf.vocabSize)
        #expect(gguf.hiddenSize == hf.hiddenSize)
        #expect(gguf.intermediateSize == hf.intermediateSize)
        #expect(gguf.numHiddenLayers == hf.numHiddenLayers)
        #expect(gguf.numAttentionHeads == hf.numAttentionHeads)
        #expect(gguf.numKeyValueHeads == hf.numKeyValueHeads)
        #expect(gguf.headDimension == hf.headDimension)
        #expect(gguf.rmsNormEps == hf.rmsNormEps, "rms_norm_eps \(gguf.rmsNormEps) vs \(hf.rmsNormEps)")
        #expect(gguf.ropeTheta == hf.ropeTheta, "rope_theta \(gguf.ropeTheta) vs \(hf.ropeTheta)")
        #expect(gguf.tieWordEmbeddings == hf.tieWordEmbeddings)
        #expect(gguf.usesQKVBias == hf.usesQKVBias)
        #expect(gguf.maxPositionEmbeddings == hf.maxPositionEmbeddings)
        #expect(gguf.bosTokenID == 1 && gguf.eosTokenID == .one(2))
    }

    /// Every parameter read through the GGUF adapter is bit-identical to transformers' safetensors.
    @Test(arguments: kinds) func tensorsEqualTheSafetensors(_ name: String) throws {
        let gguf = try GGUFModel(url: Fixtures.url("\(name)/\(name).gguf"))
        let safetensors = try SafetensorsFile(url: Fixtures.url("\(name)/model.safetensors"))
        for unit in ParameterLayout(config: gguf.config).units {
            for tensor in unit.tensors {
                let ours = try gguf.read(tensor.name), theirs = try safetensors.read(tensor.name)
                #expect(gguf.tensors[tensor.name]?.shape == tensor.shape, "\(name): \(tensor.name) shape")
                let (difference, index) = maxDifference(ours, theirs)
                #expect(difference == 0, "\(name): \(tensor.name) differs by \(difference) at element \(index)")
            }
        }
    }

    /// Ranged reads of permuted tensors (crossing rows, partial rows) equal slices of the whole tensor.
    @Test func rangedReadsOfPermutedTensors() throws {
        let gguf = try GGUFModel(url: Fixtures.url("tiny-llama/tiny-llama.gguf"))
        for name in ["model.layers.1.self_attn.q_proj.weight", "model.layers.0.self_attn.k_proj.weight"] {
            let whole = try gguf.read(name)
            let n = whole.count
            for range in [0..<1, 5..<37, 31..<33, 100..<(n - 7), 0..<n, (n - 3)..<n] {
                let part = try gguf.read(name, elements: range)
                #expect(part == Array(whole[range]), "\(name) elements \(range)")
            }
        }
        #expect(throws: CheckpointError.self) { try gguf.read("model.layers.0.self_attn.k_proj.weight", elements: 0..<100_000) }
    }

    /// `permutedRow` inverts convert_hf_to_gguf.py's `permute` (reshape(h, 2, d/2, ·).swapaxes(1, 2)).
    @Test func permutedRowInvertsLlamaCppPermute() {
        let heads = 3, d = 8, rows = heads * d
        // permute: GGUF row index r' = h·d + 2i + j holds HF row h·d + j·d/2 + i.
        var hfRowAt = [Int](repeating: -1, count: rows)
        for h in 0..<heads { for i in 0..<(d / 2) { for j in 0..<2 { hfRowAt[h * d + 2 * i + j] = h * d + j * d / 2 + i } } }
        for hfRow in 0..<rows {
            let ggufRow = GGUFModel.permutedRow(hfRow, rows: rows, heads: heads)
            #expect(hfRowAt[ggufRow] == hfRow, "HF row \(hfRow) → GGUF row \(ggufRow) holds HF row \(hfRowAt[ggufRow])")
        }
    }

    @Test func namesMapOneToOne() {
        #expect(GGUFModel.huggingFaceName(ofGGUFTensor: "token_embd.weight") == "model.embed_tokens.weight")
        #expect(GGUFModel.huggingFaceName(ofGGUFTensor: "blk.12.attn_q.bias") == "model.layers.12.self_attn.q_proj.bias")
        #expect(GGUFModel.huggingFaceName(ofGGUFTensor: "blk.0.ffn_norm.weight") == "model.layers.0.post_attention_layernorm.weight")
        #expect(GGUFModel.huggingFaceName(ofGGUFTensor: "output.weight") == "lm_head.weight")
        #expect(GGUFModel.huggingFaceName(ofGGUFTensor: "rope_freqs.weight") == nil)
        #expect(GGUFModel.huggingFaceName(ofGGUFTensor: "blk.x.attn_q.weight") == nil)
    }

    /// SmolLM2's config from its GGUF is HF's SmolLM2-135M-Instruct config.
    @Test func smolLM2Config() throws {
        guard let path = Fixtures.smolLM2Path() else { return }
        let config = try GGUFModel(url: URL(fileURLWithPath: path)).config
        #expect(config == ModelConfig(vocabSize: 49152, hiddenSize: 576, intermediateSize: 1536, numHiddenLayers: 30,
                                      numAttentionHeads: 9, numKeyValueHeads: 3, rmsNormEps: 1e-5, ropeTheta: 100_000,
                                      maxPositionEmbeddings: 8192, tieWordEmbeddings: true, bosTokenID: 1, eosTokenID: 2))
    }
}
