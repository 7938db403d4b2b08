import Checkpoints
import Foundation
import TestSupport
import Testing
import Training

/// Runs `zero-sft train` on `ranks` ranks and reads back its metrics and final parameters.
struct TrainingRun {
    /// The step lines of the metrics file.
    var metrics: [[String: Any]]
    var parameters: [String: [Float]]
    var stdout: String
    /// The evaluation lines of the metrics file (`{"step", "eval": {NAME: {...}}}`), in order.
    var evaluations: [[String: Any]] = []

    var losses: [Double] { metrics.map { $0["loss"] as! Double } }

    /// The largest absolute difference between this run's saved parameters and `reference`'s, and the
    /// tensor it is in; a tensor missing here or resized is recorded as an issue naming `label`.
    func largestParameterDifference(from reference: TrainingRun, label: String) -> (name: String, difference: Float) {
        var worst = (name: "", difference: Float(0))
        for (name, values) in reference.parameters {
            guard let other = parameters[name], other.count == values.count else {
                Issue.record("\(label): tensor \(name) missing or resized")
                continue
            }
            for (x, y) in zip(values, other) where abs(x - y) > worst.difference { worst = (name, abs(x - y)) }
        }
        return worst
    }
    func memory(step: Int) -> [[String: Int]] {
        (metrics[step]["memory"] as! [[String: Any]]).map { $0.mapValues { ($0 as! NSNumber).intValue } }
    }

    /// `saveModel` false: no `--output-dir` (no parameters read back); `launcherArguments` go to mpirun (e.g. a hostfile).
    static func run(ranks: Int, arguments: [String], in directory: URL, label: String, saveModel: Bool = true,
                    launcherArguments: [String] = []) throws -> TrainingRun {
        let metricsURL = directory.appendingPathComponent("\(label).jsonl")
        let outputURL = directory.appendingPathComponent("\(label)-model")
        let output = saveModel ? ["--output-dir", outputURL.path] : []
        let result = try MPIRun.run(ranks: ranks, arguments: ["train"] + arguments + ["--metrics-file", metricsURL.path] + output,
                                    launcherArguments: launcherArguments, timeout: 600)
        guard result.status == 0 else {
            throw TestFailure("\(label): zero-sft exited \(result.status)\nstdout:\n\(result.stdout)\nstderr:\n\(result.stderr)")
        }
        let lines = try String(contentsOf: metricsURL, encoding: .utf8).split(separator: "\n")
        let records = try lines.map { try JSONSerialization.jsonObject(with: Data($0.utf8)) as! [String: Any] }
        let metrics = records.filter { $0["eval"] == nil }, evaluations = records.filter { $0["eval"] != nil }
        guard saveModel else { return TrainingRun(metrics: metrics, parameters: [:], stdout: result.stdout, evaluations: evaluations) }
        let file = try SafetensorsFile(url: outputURL.appendingPathComponent("model.safetensors"))
        var parameters: [String: [Float]] = [:]
        for name in file.tensors.keys { parameters[name] = try file.read(name) }
        return TrainingRun(metrics: metrics, parameters: parameters, stdout: result.stdout, evaluations: evaluations)
    }
}

struct TestFailure: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

/// A scratch directory removed when the value goes away.
final class ScratchDirectory {
    let url: URL
    init() throws {
        url = FileManager.default.temporaryDirectory.appendingPathComponent("zero-sft-test-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
    }
    deinit { try? FileManager.default.removeItem(at: url) }
}

/// Deterministic pre-tokenized examples of varied lengths (vocabulary 256), prompt unsupervised.
func syntheticExamples(count: Int, seed: UInt64, minLength: Int = 6, maxLength: Int = 40) -> [SFTExample] {
    var random = TestRandom(seed: seed)
    func next() -> UInt64 { random.next() }
    return (0..<count).map { _ in
        let length = minLength + Int(next() % UInt64(maxLength - minLength + 1))
        let prompt = 1 + Int(next() % UInt64(length - 2))
        // A learnable pattern: the response continues an arithmetic sequence of bytes.
        let start = Int32(next() % 200), stride = Int32(1 + next() % 3)
        let ids = (0..<length).map { Int32(start + stride * Int32($0)) % 256 }
        let labels = ids.enumerated().map { $0.offset < prompt ? -100 : $0.element }
        return SFTExample(inputIDs: ids, labels: labels)
    }
}

func writeJSONL(_ examples: [SFTExample], to url: URL) throws {
    try (examples.map(TokenizedDataset.jsonLine).joined(separator: "\n") + "\n").write(to: url, atomically: true, encoding: .utf8)
}
