import Checkpoints
import Foundation
import ModelIO
import Kernels
import Models
import Testing
import Training

/// The real SmolLM2-135M-Instruct Q4_1 GGUF against transformers loading the same file
/// (tools/generate_model_fixtures.py): dequantised weights, logits, a masked 2-turn loss, greedy text.
@Suite(.serialized) struct SmolLM2Tests {
    struct Goldens: Decodable {
        struct Weight: Decodable { var shape: [Int]; var checksum: String; var first: [Float] }
        var prompt_ids: [Int]
        var sampled_ids: [Int]
        var sampled_logits: [Float]
        var top_ids: [[Int]]
        var top_logits: [[Float]]
        var max_abs_logit: Float
        var greedy_ids: [Int]
        var greedy_text: String
        var weights: [String: Weight]
        var conversation_ids: [Int]
        var conversation_labels: [Int]
        var conversation_loss: Double
        var conversation_supervised: Int
    }

    static func checksum(_ values: [Float]) -> UInt64 {
        values.withUnsafeBufferPointer { buffer in
            var sum: UInt64 = 0
            for i in 0..<buffer.count { sum &+= UInt64(buffer[i].bitPattern) &* UInt64(2 * i + 1) }
            return sum
        }
    }

    /// The HF tensors we read (permutation undone) are bit-identical to transformers' GGUF load.
    @Test func weightsEqualTransformersDequantisation() throws {
        guard let path = Fixtures.smolLM2Path() else { return }
        let goldens = try Fixtures.json(Goldens.self, "smollm2/goldens.json")
        let model = try GGUFModel(url: URL(fileURLWithPath: path))
        for (name, golden) in goldens.weights.sorted(by: { $0.key < $1.key }) {
            #expect(model.tensors[name]?.shape == golden.shape, "\(name) shape")
            let values = try model.read(name)
            #expect(Array(values.prefix(golden.first.count)) == golden.first, "\(name): first values")
            #expect(String(Self.checksum(values)) == golden.checksum, "\(name): checksum over all \(values.count) elements")
        }
    }

    @Test func logitsLossAndGreedyTextEqualTransformers() throws {
        guard let path = Fixtures.smolLM2Path() else { return }
        let goldens = try Fixtures.json(Goldens.self, "smollm2/goldens.json")
        let (source, store) = try loadDense(path, withGradients: false)
        let config = source.config, v = config.vocabSize

        // Logits at every prompt position, on 256 fixed ids; top-5 ids.
        let ids = goldens.prompt_ids.map { Int32($0) }
        let logits = try fullLogits(ids, config: config, store: store)
        var worst: Float = 0, worstAt = (0, 0)
        for position in ids.indices {
            for (k, id) in goldens.sampled_ids.enumerated() {
                let difference = abs(logits[position * v + id] - goldens.sampled_logits[position * goldens.sampled_ids.count + k])
                if difference > worst { worst = difference; worstAt = (position, id) }
            }
            let row = Array(logits[(position * v)..<((position + 1) * v)])
            let top = row.indices.sorted { row[$0] > row[$1] }.prefix(5)
            // Equal top-5 unless two reference logits are within the tolerance of each other.
            let reference = goldens.top_logits[position]
            let separated = zip(reference, reference.dropFirst()).allSatisfy { $0 - $1 > 2e-3 * goldens.max_abs_logit }
            if separated { #expect(Array(top) == goldens.top_ids[position], "position \(position): top-5 ids") }
            #expect(top.first == goldens.top_ids[position][0], "position \(position): argmax")
        }
        let tolerance = 1e-3 * goldens.max_abs_logit
        #expect(worst <= tolerance, "logits differ by \(worst) at position \(worstAt.0), id \(worstAt.1) (tolerance \(tolerance))")
        print("SmolLM2 logits: max |difference| \(worst) over \(ids.count) positions × 256 ids (scale \(goldens.max_abs_logit))")

        // The masked loss of a 2-turn conversation with assistant-only labels.
        let conversation = TokenBatch(examples: [(goldens.conversation_ids.map { Int32($0) }, goldens.conversation_labels.map { Int32($0) })])
        let model = DecoderModel(config: config, maxTokens: conversation.count)
        let result = try model.step(conversation, store: store, lossScale: 0, training: false)
        #expect(result.count == goldens.conversation_supervised)
        let loss = result.lossSum / Double(result.count)
        #expect(abs(loss - goldens.conversation_loss) <= 1e-4 * goldens.conversation_loss,
                "2-turn loss \(loss) vs transformers \(goldens.conversation_loss)")
        print("SmolLM2 2-turn masked loss: ours \(loss), transformers \(goldens.conversation_loss)")

        // Greedy decoding through the KV cache gives transformers' greedy tokens.
        let generator = Generator(config: config, capacity: 128)
        var sampler = TokenSampler(SamplingOptions())
        let generated = try generator.generate(after: ids, store: store, sampler: &sampler,
                                               maxNewTokens: goldens.greedy_ids.count, stopTokens: [])
        #expect(generated.tokens == goldens.greedy_ids, "greedy ids (transformers: \(goldens.greedy_text))")
    }
}
