import Foundation
import ModelIO
import Kernels
import Models
import Testing
import Training

/// The KV-cache path gives the logits of the full forward, whatever the chunking.
@Suite struct GeneratorTests {
    @Test(arguments: ["tiny-llama", "tiny-qwen2"]) func cachedLogitsEqualFullForward(_ name: String) throws {
        let goldens = try Fixtures.json(TinyGoldens.self, "\(name)/goldens.json")
        let (source, store) = try loadDense(Fixtures.url(name).path, withGradients: false)
        let config = source.config, v = config.vocabSize
        let ids = goldens.input_ids.map { Int32($0) }
        let full = try fullLogits(ids, config: config, store: store)
        let scale = maxAbs(full)
        for chunk in [1, 5, 64] {
            let generator = Generator(config: config, capacity: ids.count, chunk: chunk)
            // The first 7 tokens at once, then one at a time: each step's logits are the full forward's row.
            var logits = try generator.append(Array(ids[0..<7]), store: store)
            for position in 6..<ids.count {
                if position > 6 { logits = try generator.append([ids[position]], store: store) }
                let (difference, index) = maxDifference(logits, Array(full[(position * v)..<((position + 1) * v)]))
                #expect(difference <= 1e-5 * scale, "\(name) chunk \(chunk): position \(position) id \(index) differs by \(difference)")
            }
            #expect(generator.length == ids.count)
            #expect(throws: GenerationError.self) { try generator.append([1], store: store) }
        }
    }

    @Test func truncateAndRefeedGivesTheSameLogits() throws {
        let goldens = try Fixtures.json(TinyGoldens.self, "tiny-llama/goldens.json")
        let (source, store) = try loadDense(Fixtures.url("tiny-llama").path, withGradients: false)
        let ids = goldens.input_ids.map { Int32($0) }
        let generator = Generator(config: source.config, capacity: 64)
        let first = try generator.append(ids, store: store)
        generator.truncate(to: 10)
        let again = try generator.append(Array(ids[10...]), store: store)
        #expect(maxDifference(first, again).value <= 1e-6 * maxAbs(first))
    }

    /// CachedAttention over a cache equals Attention.forward on the whole segment, row for row.
    @Test func cachedAttentionEqualsAttention() {
        let shape = Attention.Shape(queryHeads: 6, keyValueHeads: 2, headDimension: 8)
        let n = 70, past = 45, qw = 48, kw = 16
        var state: UInt64 = 3
        func random() -> Float {
            state = state &* 6364136223846793005 &+ 1442695040888963407
            return Float(Int(state >> 40) % 2001 - 1000) / 500
        }
        let q = (0..<(n * qw)).map { _ in random() }, k = (0..<(n * kw)).map { _ in random() }, v = (0..<(n * kw)).map { _ in random() }
        var reference = [Float](repeating: 0, count: n * qw), lse = [Float](repeating: 0, count: n * 6)
        q.withUnsafeBufferPointer { qp in k.withUnsafeBufferPointer { kp in v.withUnsafeBufferPointer { vp in
            reference.withUnsafeMutableBufferPointer { out in lse.withUnsafeMutableBufferPointer { l in
                Attention.forward(out: out, lse: l, q: qp, k: kp, v: vp, boundaries: [0, n], shape: shape)
            } }
        } } }
        var cached = [Float](repeating: 0, count: (n - past) * qw)
        let newQueries = Array(q[(past * qw)...])
        newQueries.withUnsafeBufferPointer { qp in k.withUnsafeBufferPointer { kp in v.withUnsafeBufferPointer { vp in
            cached.withUnsafeMutableBufferPointer { out in
                CachedAttention.forward(out: out, q: qp, keys: kp, values: vp, past: past, newTokens: n - past, shape: shape)
            }
        } } }
        let (difference, index) = maxDifference(cached, Array(reference[(past * qw)...]))
        #expect(difference <= 1e-6, "row \(past + index / qw): differs by \(difference)")
    }
}

@Suite struct TokenSamplerTests {
    @Test func greedyIsArgmaxWithLowestIDOnTies() {
        var sampler = TokenSampler(SamplingOptions())
        #expect(sampler.next([0.1, 3, -2, 3, 1]) == 1)
    }

    @Test func topKOneAndTinyTopPAreGreedy() {
        let logits: [Float] = [0.5, 2.5, 2.4, -1, 0]
        var k1 = TokenSampler(SamplingOptions(temperature: 1.5, topK: 1, seed: 9))
        var p = TokenSampler(SamplingOptions(temperature: 1.5, topP: 1e-6, seed: 9))
        for _ in 0..<50 {
            #expect(k1.next(logits) == 1)
            #expect(p.next(logits) == 1)
        }
    }

    @Test func sameSeedSameTokensDifferentSeedDifferent() {
        let logits: [Float] = (0..<50).map { Float($0 % 7) * 0.3 }
        func draw(_ seed: UInt64) -> [Int] {
            var sampler = TokenSampler(SamplingOptions(temperature: 1, seed: seed))
            return (0..<40).map { _ in sampler.next(logits) }
        }
        #expect(draw(5) == draw(5))
        #expect(draw(5) != draw(6))
    }

    /// Frequencies follow softmax(logits / T) restricted to the top-p nucleus (20 000 draws; 4σ bounds).
    @Test func frequenciesFollowTheNucleusSoftmax() {
        let logits: [Float] = [2, 1, 0.5, 0, -1, -3]
        let temperature = 0.8, topP = 0.9
        var sampler = TokenSampler(SamplingOptions(temperature: temperature, topP: topP, seed: 1))
        let weights = logits.map { exp(Double($0) / temperature) }
        let total = weights.reduce(0, +)
        // Nucleus: tokens in order while the mass before them is below topP.
        var kept = 0, mass = 0.0
        while kept < weights.count, mass < topP { mass += weights[kept] / total; kept += 1 }
        let keptMass = weights[0..<kept].reduce(0, +)
        let draws = 20_000
        var counts = [Int](repeating: 0, count: logits.count)
        for _ in 0..<draws { counts[sampler.next(logits)] += 1 }
        for i in logits.indices {
            let p = i < kept ? weights[i] / keptMass : 0
            let sigma = (p * (1 - p) / Double(draws)).squareRoot()
            let observed = Double(counts[i]) / Double(draws)
            #expect(abs(observed - p) <= 4 * sigma + 1e-9, "token \(i): frequency \(observed), expected \(p) ± \(4 * sigma)")
        }
    }
}
