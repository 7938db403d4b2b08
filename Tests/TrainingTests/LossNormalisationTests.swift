import Foundation
import Models
import TestSupport
import Testing
import Training

/// "Rank 0 has 3 supervised tokens, rank 1 has 7": the step's loss is the sum over all 10 divided
/// by 10, not the mean of the two ranks' means.
@Suite(.serialized) struct LossNormalisationTests {
    @Test func lossIsTheSumOverAllSupervisedTokensOverTheirGlobalCount() throws {
        let scratch = try ScratchDirectory()
        // Example A: 3 supervised positions; example B: 7. Labels count from the second position on.
        let a = SFTExample(inputIDs: [10, 11, 12, 13], labels: [-100, 11, 12, 13])
        let b = SFTExample(inputIDs: [20, 21, 22, 23, 24, 25, 26, 27, 28], labels: [-100, -100, 22, 23, 24, 25, 26, 27, 28])
        #expect(a.supervisedCount == 3 && b.supervisedCount == 7)
        let data = scratch.url.appendingPathComponent("data.jsonl")
        try writeJSONL([a, b], to: data)

        // The hand computation: each example's summed NLL under the seed-5 tiny model, in this process.
        let config = ModelPreset.config(named: "tiny")!
        let store = DenseUnitStore(config: config, seed: 5, withGradients: false)
        let model = DecoderModel(config: config, maxTokens: 16)
        let sumA = try model.step(TokenBatch(examples: [(a.inputIDs, a.labels)]), store: store, lossScale: 0, training: false).lossSum
        let sumB = try model.step(TokenBatch(examples: [(b.inputIDs, b.labels)]), store: store, lossScale: 0, training: false).lossSum
        let expected = (sumA + sumB) / 10
        let meanOfMeans = (sumA / 3 + sumB / 7) / 2
        #expect(abs(expected - meanOfMeans) > 1e-3, "the case does not separate the two normalisations")

        let arguments = ["--model", "tiny", "--data", data.path, "--seq-len", "16", "--micro-batch-size", "1",
                         "--max-steps", "1", "--seed", "5", "--no-shuffle", "--zero-stage", "3"]
        let run = try TrainingRun.run(ranks: 2, arguments: arguments, in: scratch.url, label: "two-ranks")
        let loss = run.losses[0]
        #expect(abs(loss - expected) < 1e-5 * expected, "2-rank loss \(loss), expected (ΣA + ΣB)/10 = \(expected), mean of means \(meanOfMeans)")
        #expect(run.metrics[0]["supervised_tokens"] as? Int == 10)
    }
}
