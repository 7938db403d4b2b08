import Checkpoints
import Foundation
import ModelIO
import Kernels
import Models
import Testing
import Training

/// Our forward and backward of random tiny Llama (tied) and Qwen2 (biases, untied) models equal
/// transformers': logits, the masked loss and the gradient of every parameter for one example.
/// The models load from transformers' safetensors directory and from the GGUF of the same weights.
///
/// Tolerances: logits and loss within 1e-4 of the largest |logit| (resp. of the loss); each gradient
/// within 1e-4 of that tensor's largest |gradient| (float32 on both sides; measured: logits 1e-6, gradients 2.2e-6).
@Suite struct TinyModelTests {
    static let sources = ["tiny-llama", "tiny-llama/tiny-llama.gguf", "tiny-qwen2", "tiny-qwen2/tiny-qwen2.gguf"]

    @Test(arguments: sources) func logitsLossAndGradientsEqualTransformers(_ model: String) throws {
        let name = String(model.split(separator: "/")[0])
        let goldens = try Fixtures.json(TinyGoldens.self, "\(name)/goldens.json")
        let (source, store) = try loadDense(Fixtures.url(model).path)
        let config = source.config
        let ids = goldens.input_ids.map { Int32($0) }, labels = goldens.labels.map { Int32($0) }

        let logits = try fullLogits(ids, config: config, store: store)
        let scale = maxAbs(goldens.logits)
        let (logitError, at) = maxDifference(logits, goldens.logits)
        #expect(logitError <= 1e-4 * scale, "\(model): logits differ by \(logitError) at position \(at / config.vocabSize), id \(at % config.vocabSize) (scale \(scale))")

        let batch = TokenBatch(examples: [(ids, labels)])
        let decoder = DecoderModel(config: config, maxTokens: ids.count)
        store.zeroGradients()
        let result = try decoder.step(batch, store: store, lossScale: 1 / Float(goldens.supervised), training: true)
        #expect(result.count == goldens.supervised)
        let loss = result.lossSum / Double(result.count)
        #expect(abs(loss - goldens.loss) <= 1e-4 * goldens.loss, "\(model): loss \(loss) vs transformers \(goldens.loss)")

        var worstGradient: Float = 0
        defer {
            print("\(model): logits max |diff| / scale \(logitError / scale), loss |diff| \(abs(loss - goldens.loss)), gradients max |diff| / scale \(worstGradient)")
        }
        let gradients = try SafetensorsFile(url: Fixtures.url("\(name)/gradients.safetensors"))
        #expect(gradients.tensors.count == store.layout.units.reduce(0) { $0 + $1.tensors.count })
        for tensorName in gradients.tensors.keys.sorted() {
            let theirs = try gradients.read(tensorName)
            guard let ours = store.gradient(tensorName) else {
                Issue.record("\(model): no parameter \(tensorName) in our layout")
                continue
            }
            let (difference, index) = maxDifference(Array(ours), theirs)
            let tensorScale = maxAbs(theirs)
            worstGradient = max(worstGradient, difference / tensorScale)
            #expect(tensorScale > 0, "\(model): \(tensorName) has an all-zero reference gradient")
            #expect(difference <= 1e-4 * tensorScale,
                    "\(model): gradient of \(tensorName) differs by \(difference) at element \(index) (scale \(tensorScale))")
        }
    }

    /// A BF16 HF directory (as most hub checkpoints are) loads to the same logits transformers gets from the BF16 weights.
    @Test func bf16DirectoryLogits() throws {
        struct Goldens: Decodable { var input_ids: [Int]; var logits: [Float] }
        let goldens = try Fixtures.json(Goldens.self, "tiny-llama-bf16/goldens.json")
        let weights = try SafetensorsFile(url: Fixtures.url("tiny-llama-bf16/model.safetensors"))
        #expect(weights.tensors.values.allSatisfy { $0.dtype == .bf16 })
        let (source, store) = try loadDense(Fixtures.url("tiny-llama-bf16").path, withGradients: false)
        let logits = try fullLogits(goldens.input_ids.map { Int32($0) }, config: source.config, store: store)
        let (difference, index) = maxDifference(logits, goldens.logits)
        #expect(difference <= 1e-4 * maxAbs(goldens.logits), "BF16 logits differ by \(difference) at \(index)")
    }
}
