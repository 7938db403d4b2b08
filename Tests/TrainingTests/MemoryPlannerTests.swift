import Foundation
import Models
import Sharding
import Testing
@testable import Training

/// The planner's formulas against arithmetic done by hand for the `tiny` preset, and against the
/// ledger of real runs.
///
/// `tiny`: V 256, C 64, F 160, 2 layers, 4 query heads and 2 key/value heads of 16, tied.
/// Units: embedding 256·64 = 16,384; a layer 64 + 64·64 + 2·(32·64) + 64·64 + 64 + 3·(160·64) = 43,136;
/// final 64 (the norm only: the head is the embedding). Ψ = 16,384 + 2·43,136 + 64 = 102,720.
/// With N = 3 each unit is padded to a multiple of 3: shards ⌈16,384/3⌉ = 5,462, ⌈43,136/3⌉ = 14,379,
/// ⌈64/3⌉ = 22; padded units 16,386, 43,137 and 66; one rank's shard 5,462 + 2·14,379 + 22 = 34,242
/// elements; all padded units 16,386 + 2·43,137 + 66 = 102,726.
struct MemoryPlannerTests {
    let tiny = ModelPreset.config(named: "tiny")!

    func planner(_ stage: ZeroStage, ranks: Int, inFlight: Int = 1) -> MemoryPlanner {
        var planner = MemoryPlanner(config: tiny, stage: stage, ranks: ranks, sequenceLength: 64, microBatchSize: 1)
        planner.reductionsInFlight = inFlight
        return planner
    }

    @Test func activationsMatchTheModelsAllocation() {
        // Per layer and token: 2C + 2 + 2·Hq·d + 2·Hkv·d + Hq + 2F = 128 + 2 + 128 + 64 + 4 + 320 = 646 floats;
        // 2 layers × 64 tokens × 646 = 82,688; the final hidden state 64·64 = 4,096; one layer's scratch
        // per token 1 + 4C + 4F + 2·Hq·d + 2·Hkv·d = 1 + 256 + 640 + 128 + 64 = 1,089, × 64 = 69,696.
        // (82,688 + 4,096 + 69,696) × 4 bytes = 625,920.
        #expect(MemoryPlanner.activationBytes(config: tiny, tokens: 64) == 625_920)
        for (name, tokens) in [("tiny", 64), ("tiny-qwen2", 100), ("small", 256)] {
            let config = ModelPreset.config(named: name)!
            let model = DecoderModel(config: config, maxTokens: tokens)
            #expect(MemoryPlanner.activationBytes(config: config, tokens: tokens) == model.activationBytes,
                    "\(name), \(tokens) tokens: planner \(MemoryPlanner.activationBytes(config: config, tokens: tokens)), model \(model.activationBytes)")
        }
    }

    @Test func modelStatesAtEachStage() {
        // (parameters, gradients, moments) in bytes with N = 3: full padded units 4 · 102,726 = 410,904,
        // shards 4 · 34,242 = 136,968.
        let expected: [ZeroStage: (Int, Int, Int)] = [
            .zero: (410_904, 410_904, 821_808),
            .one: (410_904, 410_904, 273_936),
            .two: (410_904, 136_968, 273_936),
            .three: (136_968, 136_968, 273_936),
        ]
        for stage in ZeroStage.allCases {
            let plan = planner(stage, ranks: 3).plan()
            let (p, g, m) = expected[stage]!
            #expect(plan.parameters == p && plan.gradients == g && plan.optimizerMoments == m,
                    "\(stage), N 3: planner (\(plan.parameters), \(plan.gradients), \(plan.optimizerMoments)), by hand (\(p), \(g), \(m))")
        }
        // One rank: 4Ψ, 4Ψ, 8Ψ with Ψ = 102,720 at every stage.
        for stage in ZeroStage.allCases {
            let plan = planner(stage, ranks: 1).plan()
            #expect(plan.modelStates == 16 * 102_720, "\(stage), N 1: \(plan.modelStates) bytes, expected 16Ψ = \(16 * 102_720)")
        }
    }

    @Test func buffersBesideTheLedger() {
        let plan = planner(.zero, ranks: 1).plan()
        // 63 supervised rows (64 tokens, the last has no next token): logits 63·256 and two 63·64 row copies.
        #expect(plan.classifierBuffers == 4 * (63 * 256 + 2 * 63 * 64), "classifier \(plan.classifierBuffers)")
        // Attention backward: 2 × 64 block rows × 64 keys.
        #expect(plan.attentionScratch == 4 * 2 * 64 * 64, "attention \(plan.attentionScratch)")
        // OpenBLAS panel: max(classifier dW: min(63, 256)·min(256, 104,960), layer dW: min(64, 256)·min(160, …)) floats.
        #expect(plan.blasBuffer == 4 * 63 * 256, "blas \(plan.blasBuffer)")
        #expect(plan.runtimeBaseline == MemoryPlanner.baselineWithoutMPI && planner(.zero, ranks: 2).plan().runtimeBaseline == MemoryPlanner.baselineWithMPI)
        // Stage 0 on one rank: nothing transient but the classifier; peak = states + activations + BLAS + classifier.
        #expect(plan.peakLive == 16 * 102_720 + 625_920 + 4 * 63 * 256 + plan.classifierBuffers, "stage 0 peak \(plan.peakLive)")
        #expect(plan.predictedPeakRSS == plan.peakLive + MemoryPlanner.baselineWithoutMPI)
    }

    @Test func libnbcReceivingRounds() {
        // Binomial tree: rank r receives in round k (distance 2^(k−1)) while r is a multiple of 2^k and r + 2^(k−1) < N.
        #expect(MemoryPlanner.receivingRounds(rank: 0, ranks: 1) == 0)
        #expect(MemoryPlanner.receivingRounds(rank: 0, ranks: 2) == 1)
        #expect(MemoryPlanner.receivingRounds(rank: 1, ranks: 2) == 0)
        #expect((0..<3).map { MemoryPlanner.receivingRounds(rank: $0, ranks: 3) } == [2, 0, 0])
        #expect((0..<4).map { MemoryPlanner.receivingRounds(rank: $0, ranks: 4) } == [2, 0, 1, 0])
        #expect((0..<8).map { MemoryPlanner.receivingRounds(rank: $0, ranks: 8) } == [3, 0, 1, 0, 2, 0, 1, 0])
    }

    @Test func stageOneAndZeroOptimizerPhase() {
        // Stage 1: the reduce-scatter target is the largest shard, 14,379 floats. Open MPI picks recursive
        // halving or the butterfly for blocks this small (4 · 14,379 = 57,516 bytes < 128 KiB): a copy of the
        // unit and half of one, 1.5 · 4 · 43,137 = 258,822 bytes on every rank.
        let one = planner(.one, ranks: 3).plan(rank: 0)
        #expect(one.communication == 4 * 14_379 && one.collectiveTemporaries == 258_822, "stage 1 rank 0: \(one)")
        #expect(planner(.one, ranks: 3).plan(rank: 1).collectiveTemporaries == 258_822)
        // Large blocks: basic linear. Rank 0 receives the reduced unit (and, with 4–7 ranks, each rank's unit
        // into a second buffer); with 3 ranks the pipeline's middle rank accumulates into a unit-sized buffer;
        // with 8 ranks, blocks of 4 MiB or more go through the butterfly (1.5 units everywhere).
        let unit = 100 << 20
        #expect(Replay.reduceScatterBlockTemporary(rank: 0, ranks: 2, unit: unit, block: unit / 2) == unit)
        #expect(Replay.reduceScatterBlockTemporary(rank: 1, ranks: 2, unit: unit, block: unit / 2) == 0)
        #expect(Replay.reduceScatterBlockTemporary(rank: 1, ranks: 3, unit: unit, block: unit / 3) == unit)
        #expect(Replay.reduceScatterBlockTemporary(rank: 0, ranks: 4, unit: unit, block: unit / 4) == 2 * unit)
        #expect(Replay.reduceScatterBlockTemporary(rank: 3, ranks: 4, unit: unit, block: unit / 4) == 0)
        #expect(Replay.reduceScatterBlockTemporary(rank: 5, ranks: 8, unit: unit, block: unit / 8) == unit * 3 / 2)
        #expect(Replay.reduceScatterBlockTemporary(rank: 4, ranks: 8, unit: 16 << 20, block: 2 << 20) == 16 << 20)
        #expect(Replay.reduceScatterBlockTemporary(rank: 0, ranks: 1, unit: unit, block: unit) == 0)
        // Stage 0: units under 256 KiB on fewer than 4 ranks go round a segmented ring with two 1/N-sized
        // buffers: 2 · 172,548 / 3 = 115,032 bytes for a layer. Larger units use Rabenseifner's algorithm,
        // which touches half of a unit-sized scratch.
        #expect(planner(.zero, ranks: 3).plan().collectiveTemporaries == 115_032)
        #expect(MemoryPlanner(config: ModelPreset.config(named: "smollm2-135m")!, stage: .zero, ranks: 2, sequenceLength: 8,
                              microBatchSize: 1).plan().collectiveTemporaries == 4 * 49_152 * 576 / 2)
        #expect(planner(.zero, ranks: 1).plan().collectiveTemporaries == 0)
    }

    @Test func stageThreeReplayByHand() {
        // N = 3, rank 0 (libnbc: 2 scratch copies per reduce-scatter), at most 1 reduce-scatter in flight.
        // Units in floats: embedding E = 16,386, layers L = 43,137, final F = 66; shards e = 5,462, l = 14,379, f = 22.
        let plan = planner(.three, ranks: 3).plan(rank: 0)
        // Gathered: the forward holds layer 0 and the prefetched layer 1 (2L = 86,274 floats) — more than
        // the head's F + E + L (the prefetched last layer) = 59,589.
        #expect(plan.gatheredParameters == 4 * 86_274, "gathered \(plan.gatheredParameters)")
        // Gradient buffers: in layer 0's backward, layer 1's buffer is still in flight: 2L.
        #expect(plan.gradientBuffers == 4 * 86_274, "gradient buffers \(plan.gradientBuffers)")
        // Communication: the shards of layers 1 and 0 right after layer 0's reduce-scatter starts: 2l = 28,758.
        #expect(plan.communication == 4 * 28_758, "communication \(plan.communication)")
        // libnbc scratch: 2 copies of each of those two layers: 4L = 172,548 floats.
        #expect(plan.collectiveTemporaries == 4 * 172_548, "temporaries \(plan.collectiveTemporaries)")
        // Peak: right after layer 0's reduce-scatter starts. Persistent: shards 4·34,242 (parameters) +
        // 4·34,242 (gradients) + 8·34,242 (moments) = 547,872; activations 625,920; BLAS panel 64,512:
        // 1,238,304. Transient: gathered L (layer 0) 172,548 + gradient buffers 2L 345,096 + shards 2l
        // 115,032 + scratch 4L 690,192 = 1,322,868. Total 2,561,172.
        #expect(plan.peakLive == 2_561_172, "peak live \(plan.peakLive), by hand 2,561,172")
        #expect(plan.peakPhase == "backward reduce-scatter")
        // Ranks 1 and 2 receive in no round: no scratch, 690,192 bytes less.
        let others = planner(.three, ranks: 3).planAllRanks().dropFirst()
        #expect(others.allSatisfy { $0.peakLive == 2_561_172 - 690_192 && $0.collectiveTemporaries == 0 }, "\(others.map(\.peakLive))")
    }

    @Test func oneRankCompletesReductionsAtOnce() {
        // One rank, stage 3: no MPI, every reduce-scatter is a copy completed when it starts.
        // At the head: final + embedding + prefetched layer 1 gathered would be 59,584 floats (no padding), but the
        // forward's two layers (86,272) are more. Gradient buffers: the head's E + F = 16,448 are less than one
        // layer's 43,136, whose shard (the whole layer) is also the largest communication buffer.
        let plan = planner(.three, ranks: 1).plan()
        #expect(plan.gatheredParameters == 4 * 86_272 && plan.gradientBuffers == 4 * 43_136 && plan.communication == 4 * 43_136,
                "\(plan)")
        #expect(plan.collectiveTemporaries == 0)
    }
}

/// The ledger of real `zero-sft train` runs against the planner, on 1 and 3 ranks.
@Suite(.serialized) struct MemoryPlannerLedgerTests {
    @Test func ledgerMatchesThePlan() throws {
        let scratch = try ScratchDirectory()
        let data = scratch.url.appendingPathComponent("data.jsonl")
        try writeJSONL(syntheticExamples(count: 12, seed: 5), to: data)
        let config = ModelPreset.config(named: "tiny")!
        for ranks in [1, 3] {
            for stage in ZeroStage.allCases {
                let run = try TrainingRun.run(
                    ranks: ranks,
                    arguments: ["--model", "tiny", "--data", data.path, "--seq-len", "64", "--micro-batch-size", "1",
                                "--max-steps", "1", "--zero-stage", "\(stage.rawValue)"],
                    in: scratch.url, label: "plan-n\(ranks)-s\(stage.rawValue)")
                let plan = MemoryPlanner(config: config, stage: stage, ranks: ranks, sequenceLength: 64, microBatchSize: 1).plan()
                for ledger in run.memory(step: 0) {
                    let where_ = "N \(ranks), \(stage), rank \(ledger["rank"]!)"
                    #expect(ledger["parameters"] == plan.parameters, "\(where_): parameters ledger \(ledger["parameters"]!), plan \(plan.parameters)")
                    #expect(ledger["gradients"] == plan.gradients, "\(where_): gradients ledger \(ledger["gradients"]!), plan \(plan.gradients)")
                    #expect(ledger["optimizer_moments"] == plan.optimizerMoments,
                            "\(where_): moments ledger \(ledger["optimizer_moments"]!), plan \(plan.optimizerMoments)")
                    #expect(ledger["activations"] == plan.activations, "\(where_): activations ledger \(ledger["activations"]!), plan \(plan.activations)")
                    // Gathers follow the schedule, not the clock: exact.
                    #expect(ledger["gathered_parameters"] == plan.gatheredParameters,
                            "\(where_): gathered ledger \(ledger["gathered_parameters"]!), plan \(plan.gatheredParameters)")
                    if stage == .one {
                        #expect(ledger["communication"] == plan.communication,
                                "\(where_): reduce-scatter target ledger \(ledger["communication"]!), plan \(plan.communication)")
                    }
                    if stage.shardsGradients {
                        // How many reduce-scatters are in flight depends on timing; at least one unit's buffer is held,
                        // and never more than the whole padded model plus the tied embedding's second gradient buffer
                        // (its first reduce-scatter, started at the head, can still be in flight at the end).
                        let shards = ShardPlan(layout: ParameterLayout(config: config), ranks: ranks)
                        let bound = 4 * (shards.paddedCount + shards.units[0].paddedCount)
                        #expect((4 * 66...bound).contains(ledger["gradient_buffers"]!),
                                "\(where_): gradient buffers \(ledger["gradient_buffers"]!), bound \(bound)")
                    }
                }
            }
        }
    }
}
