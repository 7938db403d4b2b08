import Foundation
import TestSupport
import Testing

/// `--debug`: the sharding plan, a parameter checksum per step (the same for any rank count), and a
/// NaN/Inf check after every layer that names the layer, the step and the rank.
@Suite(.serialized) struct DebugModeTests {
    func checksums(_ stdout: String) -> [Double] {
        stdout.split(separator: "\n").compactMap { line in
            guard let range = line.range(of: "parameter checksum ") else { return nil }
            return Double(line[range.upperBound...].trimmingCharacters(in: .whitespaces))
        }
    }

    @Test func printsThePlanAndChecksumsThatAgreeAcrossRankCounts() throws {
        let scratch = try ScratchDirectory()
        let data = scratch.url.appendingPathComponent("data.jsonl")
        try writeJSONL(syntheticExamples(count: 24, seed: 4), to: data)
        let arguments = ["train", "--model", "tiny", "--data", data.path, "--seq-len", "64", "--micro-batch-size", "2",
                         "--max-steps", "3", "--zero-stage", "3", "--debug"]
        let one = try MPIRun.run(ranks: 1, arguments: arguments + ["--grad-accum", "2"], timeout: 120)
        let two = try MPIRun.run(ranks: 2, arguments: arguments, timeout: 120)
        #expect(one.status == 0 && two.status == 0, "exit \(one.status)/\(two.status): \(one.stderr) \(two.stderr)")
        #expect(two.stdout.contains("sharding plan: 4 units"), "no sharding plan in:\n\(two.stdout)")
        #expect(two.stdout.contains("r1 "), "the plan does not show rank 1's ranges")
        let a = checksums(one.stdout), b = checksums(two.stdout)
        #expect(a.count == 3 && b.count == 3, "checksum lines: \(a) \(b)")
        for (x, y) in zip(a, b) { #expect(abs(x - y) <= 1e-6 * abs(x), "checksums differ: 1 rank \(x), 2 ranks \(y)") }
    }

    @Test func aNonFiniteActivationStopsTheJobNamingLayerStepAndRank() throws {
        let scratch = try ScratchDirectory()
        let data = scratch.url.appendingPathComponent("data.jsonl")
        try writeJSONL(syntheticExamples(count: 8, seed: 4), to: data)
        // A learning rate of 1e30 blows the weights up after the first update.
        let result = try MPIRun.run(ranks: 2, arguments: ["train", "--model", "tiny", "--data", data.path, "--seq-len", "64",
                                                          "--micro-batch-size", "1", "--max-steps", "4", "--lr", "1e30",
                                                          "--clip-grad-norm", "0", "--debug"], timeout: 120)
        #expect(result.status != 0)
        #expect(result.stderr.contains("non-finite value") && result.stderr.contains("step 2") && result.stderr.contains("rank "),
                "stderr:\n\(result.stderr)")
        #expect(result.stderr.contains("layer") || result.stderr.contains("embedding"), "the layer is not named:\n\(result.stderr)")
    }
}
