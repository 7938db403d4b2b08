import Foundation
import Models
import TestSupport
import Testing
@testable import Training

/// `--packing bfd|greedy|none`, `--epochs`: the plan every rank computes on its own.
@Suite struct BestFitPackingTests {
    /// Examples whose first token is their index (so a micro-batch says which examples it holds), with
    /// lengths drawn like chatterbot's (1,973 examples, mean 58 tokens, a long tail to 489).
    static func chatLikeExamples(count: Int, seed: UInt64) -> [SFTExample] {
        var random = TestRandom(seed: seed)
        return (0..<count).map { index in
            // A log-normal body (median ≈ 40) and a 2% tail of long conversations, in integers.
            let uniform = { Double(random.next() >> 11) / Double(1 << 53) }
            let normal = (-2 * log(max(uniform(), 1e-12))).squareRoot() * cos(2 * Double.pi * uniform())
            var length = 14 + Int(exp(3.2 + 0.75 * normal))
            if random.next() % 50 == 0 { length = 200 + Int(random.next() % 290) }
            length = min(489, max(4, length))
            let ids = [Int32(index)] + (1..<length).map { Int32($0 % 200) }
            let labels = ids.enumerated().map { $0.offset < length / 2 ? -100 : $0.element }
            return SFTExample(inputIDs: ids, labels: labels)
        }
    }

    /// The examples (by first token) of every micro-batch of `steps` steps, per rank.
    static func examplesSeen(_ plan: inout TrainingPlan, steps: Range<Int>) -> [Int] {
        var seen: [Int] = []
        for step in steps {
            for rank in 0..<plan.ranks {
                let batches = plan.microBatches(step: step, rank: rank)
                #expect(batches.count == plan.gradientAccumulation)
                for batch in batches {
                    #expect(batch.count <= plan.maxTokensPerMicroBatch)
                    for start in batch.boundaries.dropLast() { seen.append(Int(batch.tokens[start])) }
                }
            }
        }
        return seen
    }

    @Test(arguments: PackingMethod.allCases)
    func everyExampleOncePerEpochOnEveryRankCount(packing: PackingMethod) {
        let examples = Self.chatLikeExamples(count: 700, seed: 3)
        var rowsByRanks: [[[Int]]] = []
        for ranks in [1, 2, 3, 4] {
            var plan = TrainingPlan(examples: examples, sequenceLength: 512, microBatchSize: 2, gradientAccumulation: 2, ranks: ranks,
                                    seed: 11, packing: packing, window: 256)
            let perEpoch = plan.stepsPerEpoch(epochs: 3)
            var first = 0
            for (epoch, steps) in perEpoch.enumerated() {
                let seen = Self.examplesSeen(&plan, steps: first..<(first + steps))
                #expect(seen.sorted() == Array(0..<examples.count), "\(packing), \(ranks) ranks, epoch \(epoch): \(seen.count) examples seen")
                first += steps
            }
            rowsByRanks.append((0..<3).flatMap { plan.packEpoch($0) })
        }
        // The rows do not depend on the rank count (only their deal does).
        #expect(rowsByRanks.allSatisfy { $0 == rowsByRanks[0] }, "\(packing): rows differ between rank counts")
    }

    /// Each rank plans on its own: two plans from the same inputs (as two ranks or two runs make them) give
    /// the same micro-batches; another seed gives another order.
    @Test func theBestFitPlanIsDeterministic() {
        let examples = Self.chatLikeExamples(count: 1200, seed: 5)
        func batches(seed: UInt64) -> [TokenBatch] {
            var plan = TrainingPlan(examples: examples, sequenceLength: 512, microBatchSize: 4, gradientAccumulation: 1, ranks: 3, seed: seed)
            let total = plan.stepsPerEpoch(epochs: 2).reduce(0, +)
            return (0..<total).flatMap { step in (0..<3).flatMap { plan.microBatches(step: step, rank: $0) } }
        }
        #expect(batches(seed: 42) == batches(seed: 42))
        #expect(batches(seed: 42) != batches(seed: 43))
    }

    /// BFD reaches the target on a chatterbot-like length distribution; greedy and none do not.
    @Test func bestFitFillsRowsOfAChatLikeCorpus() {
        let examples = Self.chatLikeExamples(count: 1973, seed: 7)
        var fills: [PackingMethod: Double] = [:]
        for method in PackingMethod.allCases {
            let plan = TrainingPlan(examples: examples, sequenceLength: 512, microBatchSize: 4, gradientAccumulation: 1, ranks: 1,
                                    seed: 42, packing: method)
            fills[method] = plan.report.fill
            #expect(plan.report.paddingTokens == plan.report.rowsPerEpoch * 512 - plan.report.tokens)
        }
        #expect(fills[.bfd]! >= 0.97, "bfd fills \(fills[.bfd]!)")
        #expect(fills[.bfd]! > fills[.greedy]! && fills[.greedy]! > fills[.none]!, "\(fills)")
    }

    @Test func bestFitDecreasingPacksTightly() {
        // 6 + 4, 5 + 5, 3 + 3 + 2 + 2 in rows of 10: three rows, every one full.
        let lengths = [3, 5, 2, 6, 4, 5, 3, 2]
        let rows = TrainingPlan.bestFitDecreasing(Array(lengths.indices), lengths: lengths, capacity: 10)
        #expect(rows.map { $0.map { lengths[$0] }.reduce(0, +) } == [10, 10, 10])
        #expect(rows.flatMap { $0 }.sorted() == Array(lengths.indices))
    }

    @Test func epochsAndMaxStepsAreExclusive() {
        var options = TrainingOptions()
        options.maxSteps = 10
        options.epochs = 2
        #expect(throws: OptionError.self) { try options.validate() }
        do { try options.validate() } catch { #expect("\(error)".contains("--max-steps 10 and --epochs 2")) }
        options.maxSteps = nil
        #expect(throws: Never.self) { try options.validate() }
        options.epochs = 0
        #expect(throws: OptionError.self) { try options.validate() }
    }
}
