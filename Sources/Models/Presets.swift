/// Named random-initialisation sizes: tiny ones for tests, real shapes for benchmarks and memory experiments.
public enum ModelPreset {
    public static let all: [(name: String, summary: String, config: ModelConfig)] = [
        ("tiny", "2 layers, d 64, GQA 4/2, vocab 256, tied (tests)",
         ModelConfig(vocabSize: 256, hiddenSize: 64, intermediateSize: 160, numHiddenLayers: 2,
                     numAttentionHeads: 4, numKeyValueHeads: 2, maxPositionEmbeddings: 512)),
        ("tiny-qwen2", "2 layers, d 64, GQA 4/2, vocab 256, q/k/v biases, untied (tests)",
         ModelConfig(modelType: "qwen2", vocabSize: 256, hiddenSize: 64, intermediateSize: 160, numHiddenLayers: 2,
                     numAttentionHeads: 4, numKeyValueHeads: 2, rmsNormEps: 1e-6, ropeTheta: 1_000_000,
                     maxPositionEmbeddings: 512, tieWordEmbeddings: false, attentionBias: true)),
        ("small", "4 layers, d 192, GQA 6/2, vocab 256, tied (the built-in demo)",
         ModelConfig(vocabSize: 256, hiddenSize: 192, intermediateSize: 512, numHiddenLayers: 4,
                     numAttentionHeads: 6, numKeyValueHeads: 2, maxPositionEmbeddings: 1024)),
        ("smollm2-135m", "SmolLM2-135M's shapes: 30 layers, d 576, ffn 1536, GQA 9/3, vocab 49152, tied",
         ModelConfig(vocabSize: 49152, hiddenSize: 576, intermediateSize: 1536, numHiddenLayers: 30,
                     numAttentionHeads: 9, numKeyValueHeads: 3, rmsNormEps: 1e-5, ropeTheta: 100_000,
                     maxPositionEmbeddings: 8192, initializerRange: 0.041666666666666664, bosTokenID: 1, eosTokenID: 2)),
        ("llama-1b", "a ~1.1B Llama (Llama 3.2 1B shapes and RoPE): 16 layers, d 2048, ffn 8192, GQA 32/8, vocab 128256, tied, llama3 RoPE ×32",
         ModelConfig(vocabSize: 128_256, hiddenSize: 2048, intermediateSize: 8192, numHiddenLayers: 16,
                     numAttentionHeads: 32, numKeyValueHeads: 8, rmsNormEps: 1e-5, ropeTheta: 500_000,
                     maxPositionEmbeddings: 131_072,
                     ropeScaling: RopeScaling(type: .llama3, factor: 32, originalMaxPositionEmbeddings: 8192,
                                              lowFreqFactor: 1, highFreqFactor: 4))),
    ]

    public static func config(named name: String) -> ModelConfig? {
        all.first { $0.name == name }?.config
    }
}
