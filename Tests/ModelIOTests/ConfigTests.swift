import Checkpoints
import Foundation
import Kernels
import Models
import Testing
import Training

/// `config.json` is read as transformers 5.24 reads it, and the RoPE scaling types and the sliding window
/// compute what transformers computes (goldens from tools/generate_model_fixtures.py).
@Suite struct ConfigTests {
    /// One entry of config-variants.json.
    struct Variant: Decodable {
        struct Frequencies: Decodable { var length: Int?; var inv_freq: [Float]; var attention_scaling: Float }
        struct Resolved: Decodable {
            var error: String?
            var head_dim: Int?, num_key_value_heads: Int?, rms_norm_eps: Double?, max_position_embeddings: Int?
            var tie_word_embeddings: Bool?, qkv_bias: Bool?, o_bias: Bool?, mlp_bias: Bool?
            var sliding_windows: [Int?]?
            var frequencies: [Frequencies]?
        }
        var name: String
        var ours_error: String?
        var transformers: Resolved
    }

    static let variants: [Variant] = (try? Fixtures.json([Variant].self, "config-variants.json")) ?? []

    /// The raw `config` object of a variant, as config.json bytes.
    static func configData(_ name: String) throws -> Data {
        let all = try JSONSerialization.jsonObject(with: Data(contentsOf: Fixtures.url("config-variants.json"))) as! [[String: Any]]
        let entry = try #require(all.first { $0["name"] as? String == name })
        return try JSONSerialization.data(withJSONObject: entry["config"]!)
    }

    /// Every key variant resolves to what transformers builds (head_dim, kv heads, eps, max positions, tying,
    /// biases, sliding window of every layer, RoPE inv_freq and attention factor — at each listed sequence
    /// length for dynamic), or is refused naming the key where zero-sft does not implement it.
    @Test(arguments: variants.map(\.name)) func keysReadAsTransformers(_ name: String) throws {
        let variant = try #require(Self.variants.first { $0.name == name })
        let data = try Self.configData(name)
        if let key = variant.ours_error {
            do {
                let config = try JSONDecoder().decode(ModelConfig.self, from: data)
                try config.validate()
                Issue.record("\(name): accepted; expected an error naming \(key)")
            } catch let error as ModelConfigError {
                #expect("\(error)".contains(key), "\(name): \(error)")
            }
            return
        }
        let t = variant.transformers
        #expect(t.error == nil, "\(name): transformers refused it: \(t.error ?? "")")
        let config = try JSONDecoder().decode(ModelConfig.self, from: data)
        try config.validate()
        #expect(config.headDimension == t.head_dim, "\(name): head_dim \(config.headDimension) vs \(t.head_dim ?? -1)")
        #expect(config.numKeyValueHeads == t.num_key_value_heads, "\(name): num_key_value_heads")
        #expect(Float(config.rmsNormEps) == Float(t.rms_norm_eps ?? 0), "\(name): rms_norm_eps \(config.rmsNormEps)")
        #expect(config.maxPositionEmbeddings == t.max_position_embeddings, "\(name): max_position_embeddings \(config.maxPositionEmbeddings)")
        #expect(config.tieWordEmbeddings == t.tie_word_embeddings, "\(name): tie_word_embeddings")
        #expect(config.usesQKVBias == t.qkv_bias, "\(name): q/k/v biases \(config.usesQKVBias)")
        #expect(t.o_bias == false && t.mlp_bias == false, "\(name): transformers has o_proj/MLP biases we do not implement")
        for window in t.sliding_windows ?? [] {
            #expect(config.slidingWindow == window, "\(name): sliding window \(config.slidingWindow ?? -1) vs \(window ?? -1)")
        }
        for reference in t.frequencies ?? [] {
            let (inverse, factor) = config.rotaryFrequencies(sequenceLength: reference.length)
            #expect(inverse.count == reference.inv_freq.count)
            let error = zip(inverse, reference.inv_freq).map { abs($0 - $1) / abs($1) }.max() ?? .infinity
            #expect(error <= 1e-6, "\(name) at length \(reference.length ?? 0): inv_freq differs by \(error) relative (ours \(inverse), transformers \(reference.inv_freq))")
            #expect(abs(factor - reference.attention_scaling) <= 1e-6 * reference.attention_scaling,
                    "\(name): attention factor \(factor) vs \(reference.attention_scaling)")
        }
    }

    /// A missing or mistyped key names the key and what it must hold in JSON's words (it said "expected a Int").
    @Test func missingAndMistypedKeysSayWhatTheyHold() throws {
        let base = #""model_type": "llama", "vocab_size": 64, "intermediate_size": 48, "num_attention_heads": 4"#
        for (json, message) in [("{\(base), \"num_hidden_layers\": 1}", #"config key "hidden_size" is missing, expected an integer"#),
                                ("{\(base), \"hidden_size\": 32, \"num_hidden_layers\": \"one\"}",
                                 #"config key "num_hidden_layers" is "one", expected an integer"#),
                                ("{\(base), \"hidden_size\": 32, \"num_hidden_layers\": 1, \"rms_norm_eps\": \"small\"}",
                                 #"config key "rms_norm_eps" is "small", expected a number"#)] {
            do {
                _ = try JSONDecoder().decode(ModelConfig.self, from: Data(json.utf8))
                Issue.record("accepted \(json)")
            } catch let error as ModelConfigError {
                #expect("\(error)" == message, "\(json): \(error)")
            }
        }
    }

    /// transformers 5 saves `rope_parameters.rope_theta` next to a stale top-level `rope_theta` after
    /// `config.rope_theta = …`; the nested one is the one its model uses.
    @Test func nestedRopeThetaWins() throws {
        let json = #"{"model_type": "llama", "vocab_size": 64, "hidden_size": 32, "intermediate_size": 48, "num_hidden_layers": 1,"#
            + #" "num_attention_heads": 4, "rope_theta": 10000.0, "rope_parameters": {"rope_type": "default", "rope_theta": 500000.0}}"#
        #expect(try JSONDecoder().decode(ModelConfig.self, from: Data(json.utf8)).ropeTheta == 500_000)
    }

    /// A written config reads back to the same config (export), for every resolvable variant.
    @Test func encodedConfigReadsBack() throws {
        for variant in Self.variants where variant.ours_error == nil {
            var config = try JSONDecoder().decode(ModelConfig.self, from: Self.configData(variant.name))
            let again = try JSONDecoder().decode(ModelConfig.self, from: JSONEncoder().encode(config))
            // What encode normalises: the architectures list, head_dim written out, dtype float32.
            config.architectures = again.architectures
            config.headDim = config.headDimension
            config.torchDtype = again.torchDtype
            #expect(again == config, "\(variant.name): \(again) vs \(config)")
        }
    }

    static let scaled = ["rope-llama3", "rope-linear", "rope-dynamic", "rope-yarn", "mistral-window"]

    struct ScaledGoldens: Decodable {
        var input_ids: [Int]
        var labels: [Int]
        var loss: Double
        var supervised: Int
        var incremental_prompt: Int?
    }

    /// The fixture directory with tiny-llama's weights linked in.
    static func scaledModel(_ name: String) throws -> ScratchDirectory {
        let scratch = try ScratchDirectory()
        try FileManager.default.copyItem(at: Fixtures.url("\(name)/config.json"), to: scratch.url.appendingPathComponent("config.json"))
        try FileManager.default.createSymbolicLink(at: scratch.url.appendingPathComponent("model.safetensors"),
                                                   withDestinationURL: Fixtures.url("tiny-llama/model.safetensors"))
        return scratch
    }

    /// Llama 3, linear, dynamic (40 tokens past max_position_embeddings 16) and YaRN RoPE, and Mistral's
    /// sliding window (8 of 40 tokens): logits, loss and every gradient equal transformers'.
    /// Tolerances as TinyModelTests: 1e-4 of the largest |logit|, of the loss, of each tensor's largest |gradient|.
    @Test(arguments: scaled) func logitsLossAndGradientsEqualTransformers(_ name: String) throws {
        let goldens = try Fixtures.json(ScaledGoldens.self, "\(name)/goldens.json")
        let reference = try SafetensorsFile(url: Fixtures.url("\(name)/reference.safetensors"))
        let directory = try Self.scaledModel(name)
        let (source, store) = try loadDense(directory.url.path)
        let config = source.config
        let ids = goldens.input_ids.map { Int32($0) }, labels = goldens.labels.map { Int32($0) }

        let expected = try reference.read("logits")
        let logits = try fullLogits(ids, config: config, store: store)
        let scale = maxAbs(expected)
        let (logitError, at) = maxDifference(logits, expected)
        #expect(logitError <= 1e-4 * scale, "\(name): logits differ by \(logitError) at position \(at / config.vocabSize) (scale \(scale))")

        let decoder = DecoderModel(config: config, maxTokens: ids.count)
        store.zeroGradients()
        let result = try decoder.step(TokenBatch(examples: [(ids, labels)]), store: store, lossScale: 1 / Float(goldens.supervised), training: true)
        let loss = result.lossSum / Double(result.count)
        #expect(abs(loss - goldens.loss) <= 1e-4 * goldens.loss, "\(name): loss \(loss) vs transformers \(goldens.loss)")
        var worst: Float = 0
        for tensorName in reference.tensors.keys.sorted() where tensorName.hasPrefix("model.") {
            let theirs = try reference.read(tensorName)
            let ours = try #require(store.gradient(tensorName), "\(name): no parameter \(tensorName)")
            let (difference, index) = maxDifference(Array(ours), theirs)
            let tensorScale = maxAbs(theirs)
            worst = max(worst, difference / tensorScale)
            #expect(difference <= 1e-4 * tensorScale, "\(name): gradient of \(tensorName) differs by \(difference) at \(index) (scale \(tensorScale))")
        }
        print("\(name): logits max |diff| / scale \(logitError / scale), loss |diff| \(abs(loss - goldens.loss)), gradients max |diff| / scale \(worst)")
    }

    /// Dynamic RoPE in a packed batch scales for the longest example (`max(position_ids) + 1` of the row,
    /// positions restarting per example): packed after a shorter example, the 40-token example's logits
    /// are still transformers' for it alone.
    @Test func dynamicScalesForTheLongestPackedExample() throws {
        let goldens = try Fixtures.json(ScaledGoldens.self, "rope-dynamic/goldens.json")
        let expected = try SafetensorsFile(url: Fixtures.url("rope-dynamic/reference.safetensors")).read("logits")
        let directory = try Self.scaledModel("rope-dynamic")
        let (source, store) = try loadDense(directory.url.path, withGradients: false)
        let v = source.config.vocabSize, ids = goldens.input_ids.map { Int32($0) }
        let short = Array(ids[0..<10])
        let batch = TokenBatch(examples: [(short, [Int32](repeating: -100, count: 10)), (ids, [Int32](repeating: -100, count: ids.count))])
        let logits = try DecoderModel(config: source.config, maxTokens: batch.count).logits(batch, store: store)
        let (difference, index) = maxDifference(Array(logits[(10 * v)...]), expected)
        #expect(difference <= 1e-4 * maxAbs(expected), "packed: the 40-token example's logits differ by \(difference) at \(index)")
    }

    /// Cached decoding one token at a time after a 20-token prompt gives transformers' logits at each step:
    /// with dynamic RoPE the frequencies grow with the cache (each step's keys keep the rotation they were
    /// cached with, as in transformers), and the sliding window slides over the cache.
    @Test(arguments: ["rope-dynamic", "mistral-window"]) func cachedDecodingEqualsTransformers(_ name: String) throws {
        let goldens = try Fixtures.json(ScaledGoldens.self, "\(name)/goldens.json")
        let expected = try SafetensorsFile(url: Fixtures.url("\(name)/reference.safetensors")).read("incremental_logits")
        let directory = try Self.scaledModel(name)
        let (source, store) = try loadDense(directory.url.path, withGradients: false)
        let v = source.config.vocabSize, ids = goldens.input_ids.map { Int32($0) }
        let prompt = try #require(goldens.incremental_prompt)
        let generator = Generator(config: source.config, capacity: ids.count)
        var rows = [try generator.append(Array(ids[0..<prompt]), store: store)]
        for t in prompt..<ids.count { rows.append(try generator.append([ids[t]], store: store)) }
        #expect(rows.count * v == expected.count)
        let scale = maxAbs(expected)
        for (step, row) in rows.enumerated() {
            let (difference, index) = maxDifference(row, Array(expected[(step * v)..<((step + 1) * v)]))
            #expect(difference <= 1e-4 * scale, "\(name): step \(step) id \(index) differs by \(difference) (scale \(scale))")
        }
    }
}
