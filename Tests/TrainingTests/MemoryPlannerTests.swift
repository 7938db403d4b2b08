import Foundation
import Kernels
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
        planner.threads = 1  // attention scratch is per thread: one, whatever OPENBLAS_NUM_THREADS says
        return planner
    }

    @Test func activationsMatchTheModelsAllocation() {
        // Per layer and token: 2C + 2 + 2·Hq·d + 2·Hkv·d + Hq + 2F = 128 + 2 + 128 + 64 + 4 + 320 = 646 floats;
        // 2 layers × 64 tokens × 646 = 82,688; the final hidden state 64·64 = 4,096; one layer's scratch
        // per token 1 + 3C + F + 2·Hq·d + 2·Hkv·d + (Hq·d + 2·Hkv·d, the fused q/k/v output)
        // = 1 + 192 + 160 + 128 + 64 + 128 = 673, × 64 = 43,072.
        // (82,688 + 4,096 + 43,072) × 4 bytes = 519,424.
        #expect(MemoryPlanner.activationBytes(config: tiny, tokens: 64) == 519_424)
        for (name, tokens) in [("tiny", 64), ("tiny-qwen2", 100), ("small", 256)] {
            let config = ModelPreset.config(named: name)!
            let model = DecoderModel(config: config, maxTokens: tokens)
            #expect(MemoryPlanner.activationBytes(config: config, tokens: tokens) == model.activationBytes,
                    "\(name), \(tokens) tokens: planner \(MemoryPlanner.activationBytes(config: config, tokens: tokens)), model \(model.activationBytes)")
        }
    }

    /// `--param-dtype bf16`, N = 3. Stage 3: a gather's buffer of patterns is 4·⌈padded/2⌉ bytes (a layer
    /// 4·21,569 = 86,276) and the unit in use 4·43,137 = 172,548; the peak is a layer in use with the next
    /// layer's patterns in flight (or its own, at the moment of widening): 258,824, against fp32's two
    /// layers 345,096. Stages 0–2: the rounded copy of the unit in use, a layer: 172,548.
    @Test func bf16ParametersGatherHalfSizeBuffers() {
        var stage3 = planner(.three, ranks: 3)
        #expect(stage3.plan().gatheredParameters == 345_096)
        stage3.parameterDType = .bf16
        #expect(stage3.plan().gatheredParameters == 258_824, "stage 3 bf16: \(stage3.plan().gatheredParameters)")
        for stage in [ZeroStage.zero, .two] {
            var planner = planner(stage, ranks: 3)
            #expect(planner.plan().gatheredParameters == 0)
            planner.parameterDType = .bf16
            #expect(planner.plan().gatheredParameters == 172_548, "\(stage) bf16: \(planner.plan().gatheredParameters)")
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

    /// `--precision bf16` and oneDNN: the bf16 operand copies (2 bytes an element: the classifier's
    /// `dlogits (63, 256)` and `W (256, 64)` on the rank's thread — larger here than a layer's — and one
    /// attention block's on the second worker) and oneDNN's runtime, each added once.
    @Test func bf16OperandsAndOneDNNRuntime() {
        var fp32 = planner(.zero, ranks: 1)
        fp32.threads = 2
        var bf16 = fp32
        bf16.precision = .bf16
        let a = fp32.plan(), b = bf16.plan()
        let group = tiny.numAttentionHeads / tiny.numKeyValueHeads, d = tiny.headDimension
        let layerA = 64 * max(2 * tiny.intermediateSize, (tiny.numAttentionHeads + 2 * tiny.numKeyValueHeads) * d, tiny.hiddenSize)
        let layerB = max(2 * tiny.intermediateSize * tiny.hiddenSize, 64 * max(tiny.intermediateSize, tiny.hiddenSize))
        let main = max(63 * 256, layerA) + max(256 * 64, layerB)
        let worker = 64 * group * 64 + 64 * group * d
        #expect(a.bf16Operands == 0 && b.bf16Operands == 2 * (main + worker), "bf16 operands \(b.bf16Operands)")
        #expect(b.runtimeBaseline == MemoryPlanner.baselineWithoutMPI + MemoryPlanner.oneDNNBaseline)
        #expect(b.predictedPeakRSS == a.predictedPeakRSS + b.bf16Operands + MemoryPlanner.oneDNNBaseline)
        var onednn = fp32
        onednn.library = .onednn
        #expect(onednn.plan().predictedPeakRSS == a.predictedPeakRSS + MemoryPlanner.oneDNNBaseline)
    }

    @Test func buffersBesideTheLedger() {
        var onePlanner = planner(.zero, ranks: 1)
        onePlanner.threads = 2
        let plan = onePlanner.plan()
        // 63 supervised rows (64 tokens, the last has no next token): logits 63·288 (V = 256 rows padded by 32:
        // Classifier.logitsStride) and two 63·64 row copies.
        #expect(plan.classifierBuffers == 4 * (63 * 288 + 2 * 63 * 64), "classifier \(plan.classifierBuffers)")
        // Attention backward, per worker thread (2): stacked q, dO, dQ (64 rows × group × d each) and
        // P, dP (64 × group rows × 64 keys each).
        let group = tiny.numAttentionHeads / tiny.numKeyValueHeads, d = tiny.headDimension
        #expect(plan.attentionScratch == 4 * 2 * (3 * 64 * group * d + 2 * 64 * group * 64), "attention \(plan.attentionScratch)")
        // OpenBLAS panel: max(classifier dW: min(63, 256)·min(256, 104,960), layer dW: min(64, 256)·min(160, …)) floats.
        #expect(plan.blasBuffer == 4 * 63 * 256, "blas \(plan.blasBuffer)")
        #expect(plan.runtimeBaseline == MemoryPlanner.baselineWithoutMPI && planner(.zero, ranks: 2).plan().runtimeBaseline == MemoryPlanner.baselineWithMPI)
        // Stage 0 on one rank: the classifier's buffers are held (the model keeps them), attention's scratch is
        // the only transient; peak = states + activations + classifier + BLAS + attention.
        #expect(plan.peakLive == 16 * 102_720 + 519_424 + plan.classifierBuffers + 4 * 63 * 256 + plan.attentionScratch,
                "stage 0 peak \(plan.peakLive)")
        #expect(plan.peakPhase == "forward attention", "\(plan.peakPhase)")
        #expect(plan.predictedPeakRSS == plan.peakLive + MemoryPlanner.baselineWithoutMPI)
    }

    @Test func everyRankHoldsTheSame() {
        // Ring reduce-scatters: no rank roots a reduction, so every rank's plan is rank 0's.
        for stage in ZeroStage.allCases {
            let plans = planner(stage, ranks: 4, inFlight: 2).planAllRanks()
            #expect(plans.map(\.rank) == [0, 1, 2, 3])
            #expect(Set(plans.map(\.predictedPeakRSS)).count == 1, "\(stage): \(plans.map(\.predictedPeakRSS))")
        }
    }

    @Test func stageOneAndZeroOptimizerPhase() {
        // Stage 1: the ring reduces each unit inside the full gradient and receives into one scratch of
        // the largest shard, 14,379 floats; nothing inside MPI.
        let one = planner(.one, ranks: 3).plan()
        #expect(one.communication == 4 * 14_379 && one.collectiveTemporaries == 0, "stage 1: \(one)")
        // (the attention scratch, 90,112 bytes at one thread, is more than that shard, 57,516)
        #expect(one.peakPhase == "forward attention", "\(one.peakPhase)")
        // One rank: nothing to reduce, no scratch.
        #expect(planner(.one, ranks: 1).plan().communication == 0)
        // Stage 0: units under 256 KiB on fewer than 4 ranks go round a segmented ring with two 1/N-sized
        // buffers: 2 · 172,548 / 3 = 115,032 bytes for a layer. Larger units use Rabenseifner's algorithm,
        // which touches half of a unit-sized scratch.
        #expect(planner(.zero, ranks: 3).plan().collectiveTemporaries == 115_032)
        #expect(MemoryPlanner(config: ModelPreset.config(named: "smollm2-135m")!, stage: .zero, ranks: 2, sequenceLength: 8,
                              microBatchSize: 1).plan().collectiveTemporaries == 4 * 49_152 * 576 / 2)
        #expect(planner(.zero, ranks: 1).plan().collectiveTemporaries == 0)
    }

    /// N = 3, stage 3. Units in floats: embedding E = 16,386, layers L = 43,137, final F = 66; shards
    /// e = 5,462, l = 14,379, f = 22. Persistent bytes: shards 4·34,242 (parameters) + 4·34,242
    /// (gradients) + 8·34,242 (moments) = 547,872, activations 519,424, the classifier's chunk buffers
    /// 4·(63·288 + 2·63·64) = 104,832 (held by the model; logits rows padded to 288), BLAS panel 64,512: 1,236,640.
    /// Attention scratch at one thread: stacked q, dO, dQ (64 rows × group 2 × d 16 each) and P, dP
    /// (128 × 64 each) = 22,528 floats = 90,112 bytes. The backward releases, in order: E and F at the head, layer 1, layer 0, E.
    @Test func stageThreeReplayByHandWithOneInFlight() {
        let plan = planner(.three, ranks: 3, inFlight: 1).plan()
        // Gathered: the forward holds layer 0 and the prefetched layer 1 (2L = 86,274 floats) — more than
        // the head's F + E + L (the prefetched last layer) = 59,589.
        #expect(plan.gatheredParameters == 4 * 86_274, "gathered \(plan.gatheredParameters)")
        // Gradient buffers: in layer 0's backward, layer 1's reduce-scatter is the one in flight: 2L.
        #expect(plan.gradientBuffers == 4 * 86_274, "gradient buffers \(plan.gradientBuffers)")
        // Communication: one shard at a time, the largest a layer's: l.
        #expect(plan.communication == 4 * 14_379, "communication \(plan.communication)")
        #expect(plan.collectiveTemporaries == 0)
        // Peak: layer 0's backward attention: gathered L 172,548 + gradient buffers 2L 345,096 + layer 1's
        // shard 57,516 + attention 90,112 = 665,272; total 1,901,912.
        #expect(plan.peakLive == 1_901_912, "peak live \(plan.peakLive), by hand 1,901,912")
        #expect(plan.peakPhase == "backward attention")
    }

    @Test func stageThreeReplayByHandWithTwoInFlight() {
        let plan = planner(.three, ranks: 3, inFlight: 2).plan()
        #expect(plan.gatheredParameters == 4 * 86_274, "gathered \(plan.gatheredParameters)")
        // Gradient buffers: at the end, layers 1 and 0 in flight and the embedding's second buffer:
        // 2L + E = 102,660 floats.
        #expect(plan.gradientBuffers == 4 * 102_660, "gradient buffers \(plan.gradientBuffers)")
        // Communication: layers 1 and 0 in flight, 2l = 28,758 floats.
        #expect(plan.communication == 4 * 28_758, "communication \(plan.communication)")
        // Peak: layer 1's backward attention with the head's E and F still in flight: gathered 2L
        // (layer 1 and the prefetched layer 0) 345,096 + gradient buffers E + F + L 238,356 + shards
        // e + f 21,936 + attention 90,112 = 695,500; total 1,932,140.
        #expect(plan.peakLive == 1_932_140, "peak live \(plan.peakLive), by hand 1,932,140")
        #expect(plan.peakPhase == "backward attention")
    }

    /// N = 3, stage 2, at most 2 in flight: no gathers; persistent bytes: full parameters 4·102,726 =
    /// 410,904, gradient shards 136,968, moment shards 273,936, activations 519,424, classifier 104,832,
    /// BLAS 64,512: 1,510,576.
    @Test func stageTwoReplayByHand() {
        let plan = planner(.two, ranks: 3, inFlight: 2).plan()
        #expect(plan.gatheredParameters == 0)
        // The head releases E and F (both in flight); layer 1's release completes E, layer 0's completes F;
        // at the end layers 1 and 0 are in flight when the embedding's second gradient buffer is taken:
        // 2L + E = 102,660 floats, beside their shards 2l = 28,758.
        #expect(plan.gradientBuffers == 4 * 102_660 && plan.communication == 4 * 28_758, "\(plan)")
        // Peak there: 410,640 + 115,032 = 525,672 transient; total 2,036,248.
        #expect(plan.peakLive == 2_036_248, "peak live \(plan.peakLive), by hand 2,036,248")
        #expect(plan.peakPhase == "embedding backward")
        #expect(plan.collectiveTemporaries == 0)
    }

    @Test func oneRankAddsGradientsAtOnce() {
        // One rank, stage 3: no MPI, a released gradient is added to the store at once, no scratch.
        // At the head: final + embedding + prefetched layer 1 gathered would be 59,584 floats (no padding), but the
        // forward's two layers (86,272) are more. Gradient buffers: the head's E + F = 16,448 are less than one
        // layer's 43,136.
        let plan = planner(.three, ranks: 1).plan()
        #expect(plan.gatheredParameters == 4 * 86_272 && plan.gradientBuffers == 4 * 43_136 && plan.communication == 0,
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
                        // How many reduce-scatters are in flight depends on timing, up to the engine's cap (2): the
                        // plan assumes the cap is always reached, so it bounds the ledger; at least one layer's
                        // buffer is held. With one rank nothing is in flight: exact.
                        let layer = 4 * ShardPlan(layout: ParameterLayout(config: config), ranks: ranks).units[1].paddedCount
                        let buffers = ledger["gradient_buffers"]!, communication = ledger["communication"]!
                        #expect((layer...plan.gradientBuffers).contains(buffers),
                                "\(where_): gradient buffers \(buffers), plan \(plan.gradientBuffers)")
                        #expect(communication <= plan.communication, "\(where_): communication \(communication), plan \(plan.communication)")
                        if ranks == 1 {
                            #expect(buffers == plan.gradientBuffers && communication == 0, "\(where_): \(buffers), \(communication)")
                        }
                    }
                }
            }
        }
        // `--param-dtype bf16`: rounded copies (stages 0–2) and half-size gathers (stage 3), exact.
        for (ranks, stage) in [(3, ZeroStage.three), (3, .zero), (1, .three)] {
            let run = try TrainingRun.run(
                ranks: ranks,
                arguments: ["--model", "tiny", "--data", data.path, "--seq-len", "64", "--micro-batch-size", "1",
                            "--max-steps", "1", "--zero-stage", "\(stage.rawValue)", "--param-dtype", "bf16"],
                in: scratch.url, label: "plan-n\(ranks)-s\(stage.rawValue)-bf16")
            var planner = MemoryPlanner(config: config, stage: stage, ranks: ranks, sequenceLength: 64, microBatchSize: 1)
            planner.parameterDType = .bf16
            let plan = planner.plan()
            for ledger in run.memory(step: 0) {
                #expect(ledger["gathered_parameters"] == plan.gatheredParameters,
                        "N \(ranks), \(stage), bf16, rank \(ledger["rank"]!): gathered ledger \(ledger["gathered_parameters"]!), plan \(plan.gatheredParameters)")
            }
        }
        // The cap bounds a rank's gradient memory however the ranks drift: with one reduce-scatter in
        // flight, no rank holds more than the plan for a cap of 1 (two layers' buffers).
        for stage in [ZeroStage.two, .three] {
            let run = try TrainingRun.run(
                ranks: 3,
                arguments: ["--model", "tiny", "--data", data.path, "--seq-len", "64", "--micro-batch-size", "1",
                            "--max-steps", "2", "--zero-stage", "\(stage.rawValue)", "--reductions-in-flight", "1"],
                in: scratch.url, label: "plan-n3-s\(stage.rawValue)-cap1")
            var planner = MemoryPlanner(config: config, stage: stage, ranks: 3, sequenceLength: 64, microBatchSize: 1)
            planner.reductionsInFlight = 1
            let plan = planner.plan()
            for ledger in run.memory(step: 1) {
                #expect(ledger["gradient_buffers"]! <= plan.gradientBuffers && ledger["communication"]! <= plan.communication,
                        "\(stage), cap 1, rank \(ledger["rank"]!): gradient buffers \(ledger["gradient_buffers"]!) (plan \(plan.gradientBuffers)), communication \(ledger["communication"]!) (plan \(plan.communication))")
            }
        }
    }
}
