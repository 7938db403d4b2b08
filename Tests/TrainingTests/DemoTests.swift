import Foundation
import TestSupport
import Testing

/// The README's main job (`launch/run -n 4`, i.e. `zero-sft` = `demo`): a small model trained at
/// ZeRO stage 3 learns the built-in question set, and its greedy answers (the KV-cache `Generator`
/// over the sharded parameters, run by every rank) are printed before and after.
@Suite(.serialized) struct DemoTests {
    @Test func theSmallModelLearnsTheQuestionSetAtStageThreeOnFourRanks() throws {
        let result = try MPIRun.run(ranks: 4, arguments: [], timeout: 300)
        #expect(result.status == 0, "exit \(result.status):\n\(result.stderr)")
        let out = result.stdout
        guard let after = out.range(of: "after training:") else {
            Issue.record("no \"after training:\" section in:\n\(out)")
            return
        }
        let answers = String(out[after.upperBound...])
        // The training answers (DemoTask), each a whole line.
        for expected in ["A: Paris.\n", "A: Eight.\n", "A: 42\n", "A: William Shakespeare.\n"] {
            #expect(answers.contains(expected), "missing \(expected) after training:\n\(answers)")
        }
        // Before training the model does not know them (the answers come from training, not the prompt).
        let before = String(out[..<after.lowerBound])
        #expect(!before.contains("A: Paris."), "the untrained model already answers:\n\(before)")
        let finalLoss = answers.components(separatedBy: "final loss on the question set: ").last?
            .split(separator: " ").first.flatMap { Double($0) }
        #expect((finalLoss ?? .infinity) < 0.05, "final loss \(finalLoss.map { "\($0)" } ?? "missing") in:\n\(answers)")
        #expect(out.contains("on 4 rank(s), ZeRO stage 3"), "banner:\n\(out)")
    }
}
