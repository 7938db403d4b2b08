import Models
import Testing
@testable import Training

@Suite struct PackingTests {
    @Test func everyRankRunsTheSameMicroStepsAndEveryExampleIsUsedOncePerEpoch() {
        let examples = syntheticExamples(count: 50, seed: 1, minLength: 4, maxLength: 60)
        for ranks in [1, 2, 3, 4] {
            var plan = TrainingPlan(examples: examples, sequenceLength: 64, microBatchSize: 2, gradientAccumulation: 3, ranks: ranks, seed: 7)
            var seen = 0, supervised = 0
            for step in 0..<plan.stepsPerEpoch {
                for rank in 0..<ranks {
                    let batches = plan.microBatches(step: step, rank: rank)
                    #expect(batches.count == 3, "rank \(rank) step \(step): \(batches.count) micro-batches")
                    for batch in batches {
                        #expect(batch.count <= 2 * 64)
                        seen += batch.boundaries.count - 1
                        supervised += batch.supervisedCount
                    }
                }
            }
            #expect(seen == examples.count, "\(ranks) ranks: \(seen) examples in one epoch, expected \(examples.count)")
            #expect(supervised == plan.report.supervisedTokens)
        }
    }

    @Test func longExamplesAreTruncatedAndUnsupervisedOnesSkippedAndCounted() {
        let long = SFTExample(inputIDs: Array(0..<100), labels: Array(0..<100))
        let none = SFTExample(inputIDs: [1, 2, 3], labels: [-100, -100, -100])
        let ok = SFTExample(inputIDs: [1, 2, 3], labels: [-100, 2, 3])
        let plan = TrainingPlan(examples: [long, none, ok], sequenceLength: 32, microBatchSize: 1, gradientAccumulation: 1, ranks: 1, seed: 1)
        #expect(plan.report.truncated == 1)
        #expect(plan.report.skippedUnsupervised == 1)
        #expect(plan.examples.count == 2)
        #expect(plan.report.longestExample == 32)
    }

    @Test func labelsShiftWithinEachExampleOnly() {
        let batch = TokenBatch(examples: [(inputIDs: [5, 6, 7], labels: [-100, 6, 7]), (inputIDs: [8, 9], labels: [8, 9])])
        #expect(batch.targets == [6, 7, -100, 9, -100])
        #expect(batch.positions == [0, 1, 2, 0, 1])
        #expect(batch.boundaries == [0, 3, 5])
    }

    @Test func learningRateWarmsUpThenDecays() {
        let schedule = LearningRateSchedule(peak: 1e-3, warmupSteps: 10, totalSteps: 110)
        #expect(schedule.rate(at: 0) == 0)
        #expect(abs(schedule.rate(at: 5) - 5e-4) < 1e-12)
        #expect(abs(schedule.rate(at: 10) - 1e-3) < 1e-12)
        #expect(abs(schedule.rate(at: 60) - 5e-4) < 1e-9)
        #expect(schedule.rate(at: 110) < 1e-12)
    }
}

@Suite struct DatasetTests {
    @Test func malformedLinesNameTheFileAndLine() throws {
        let scratch = try ScratchDirectory()
        let url = scratch.url.appendingPathComponent("bad.jsonl")
        let cases: [(String, String)] = [
            ("{\"input_ids\": [1, 2], \"labels\": [-100, 2]}\n{\"input_ids\": [1, 2,", "bad.jsonl:2: expected a JSON object"),
            ("{\"input_ids\": [1, 2], \"labels\": [2]}", "bad.jsonl:1: labels has 1 entries, input_ids has 2"),
            ("\n{\"input_ids\": [1, 999]}", "bad.jsonl:2: input_ids[1] = 999 is outside the vocabulary (0..<256)"),
            ("{\"input_ids\": [1, 2], \"labels\": [-5, 2]}", "bad.jsonl:1: labels[0] = -5 is neither -100 nor a token id"),
            ("{\"labels\": [1]}", "bad.jsonl:1: expected a JSON object"),
            ("", "bad.jsonl: no examples"),
        ]
        for (text, message) in cases {
            try text.write(to: url, atomically: true, encoding: .utf8)
            #expect {
                _ = try TokenizedDataset.load(from: url, vocabularySize: 256)
            } throws: { error in
                "\(error)".contains(message)
            }
        }
        try "{\"input_ids\": [1, 2, 3]}\n\n{\"input_ids\": [4, 5], \"labels\": [-100, 5]}\n".write(to: url, atomically: true, encoding: .utf8)
        let examples = try TokenizedDataset.load(from: url, vocabularySize: 256)
        #expect(examples == [SFTExample(inputIDs: [1, 2, 3], labels: [1, 2, 3]), SFTExample(inputIDs: [4, 5], labels: [-100, 5])])
    }
}
import Foundation
