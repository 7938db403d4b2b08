import Foundation
import Models
import Sharding
import TestSupport
import Testing
import Training

/// What each stage keeps per rank, from the ledger of real runs.
@Suite(.serialized) struct MemoryTests {
    @Test func eachStageShrinksWhatItShards() throws {
        let scratch = try ScratchDirectory()
        let data = scratch.url.appendingPathComponent("data.jsonl")
        try writeJSONL(syntheticExamples(count: 16, seed: 3), to: data)
        let config = ModelPreset.config(named: "tiny")!
        let psi = ParameterLayout(config: config).parameterCount
        func ledger(ranks: Int, stage: Int) throws -> [[String: Int]] {
            try TrainingRun.run(ranks: ranks, arguments: ["--model", "tiny", "--data", data.path, "--seq-len", "64",
                                                          "--micro-batch-size", "1", "--max-steps", "1", "--zero-stage", "\(stage)"],
                                in: scratch.url, label: "n\(ranks)-s\(stage)").memory(step: 0)
        }
        let single = try ledger(ranks: 1, stage: 0)[0]
        #expect(single["parameters"] == 4 * psi && single["gradients"] == 4 * psi && single["optimizer_moments"] == 8 * psi,
                "1 rank holds 4Ψ + 4Ψ + 8Ψ bytes: \(single)")
        let plan = ShardPlan(layout: ParameterLayout(config: config), ranks: 4)
        let shardBytes = 4 * plan.shardCount, paddedBytes = 4 * plan.paddedCount
        // Padding bound: fewer than 4 elements per unit.
        #expect(plan.paddedCount - psi < 4 * plan.units.count)
        for rank in try ledger(ranks: 4, stage: 3) {
            #expect(rank["parameters"] == shardBytes && rank["gradients"] == shardBytes && rank["optimizer_moments"] == 2 * shardBytes,
                    "stage 3, 4 ranks: rank \(rank["rank"]!) holds \(rank)")
            let states = rank["parameters"]! + rank["gradients"]! + rank["optimizer_moments"]!
            let quarter = Double(single["parameters"]! + single["gradients"]! + single["optimizer_moments"]!) / 4
            #expect(abs(Double(states) - quarter) <= Double(16 * 4 * plan.units.count), "stage 3 model states \(states), a quarter of 1 rank is \(quarter)")
            #expect(rank["gathered_parameters"]! > 0, "stage 3 gathers units")
        }
        for rank in try ledger(ranks: 4, stage: 1) {
            #expect(rank["parameters"] == paddedBytes && rank["gradients"] == paddedBytes && rank["optimizer_moments"] == 2 * shardBytes,
                    "stage 1 shards only the moments: \(rank)")
        }
        for rank in try ledger(ranks: 4, stage: 2) {
            #expect(rank["parameters"] == paddedBytes && rank["gradients"] == shardBytes && rank["optimizer_moments"] == 2 * shardBytes,
                    "stage 2 shards moments and gradients: \(rank)")
        }
        for rank in try ledger(ranks: 4, stage: 0) {
            #expect(rank["parameters"] == paddedBytes && rank["gradients"] == paddedBytes && rank["optimizer_moments"] == 2 * paddedBytes,
                    "stage 0 shards nothing: \(rank)")
        }
    }
}
