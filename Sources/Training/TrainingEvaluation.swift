import Collectives
import Foundation
import Models
import Sharding

/// A named set of examples scored during training (`--eval-data NAME=PATH`, or `val` from `--val-fraction`).
public struct EvaluationSet: Sendable, Equatable {
    /// The set's name in the log line and the metrics file: letters, digits, `_`, `-` and `.`.
    public var name: String
    public var examples: [SFTExample]

    public init(name: String, examples: [SFTExample]) {
        self.name = name
        self.examples = examples
    }

    /// The name `--val-fraction` gives the held-out part of the training file.
    public static let validationName = "val"

    /// Whether `name` may name a set (non-empty; letters, digits, `_`, `-`, `.`): it becomes a JSON key and a log word.
    public static func isValidName(_ name: String) -> Bool {
        !name.isEmpty && name.unicodeScalars.allSatisfy { $0.isASCII && (CharacterSet.alphanumerics.contains($0) || "_-.".unicodeScalars.contains($0)) }
    }
}

/// One set's score at one evaluation, as written to the metrics file under `"eval"`.
public struct EvaluationRecord: Sendable, Codable, Equatable {
    /// Mean masked negative log-likelihood over the set's supervised tokens (nats), as `zero-sft eval` computes it.
    public var loss: Double
    public var supervisedTokens: Int
    /// `loss` minus the set's step-0 loss (the starting model's): negative is learning, positive on a
    /// reference set is forgetting.
    public var deltaFromStart: Double

    enum CodingKeys: String, CodingKey {
        case loss
        case supervisedTokens = "supervised_tokens"
        case deltaFromStart = "delta_from_step_0"
    }
}

/// One evaluation of every set, a metrics-file line of its own: `{"step": S, "eval": {NAME: record, …}}`
/// (`step`: optimizer steps completed, 0 for the starting model; `seconds`: the evaluation's wall time).
public struct EvaluationMetrics: Sendable, Codable, Equatable {
    public var step: Int
    public var eval: [String: EvaluationRecord]
    public var seconds: Double
}

/// Why a run ended before `totalSteps`.
public struct EarlyStop: Sendable, Equatable, CustomStringConvertible {
    /// Optimizer steps completed when the run stopped.
    public var step: Int
    /// The set watched (`val`, else the first `--eval-data` set).
    public var set: String
    public var patience: Int
    /// The best loss of `set` and the step it was measured at.
    public var bestLoss: Double
    public var bestStep: Int

    public var description: String {
        "early stop at step \(step): \(set) loss has not improved on " + String(format: "%.6f", bestLoss)
            + " (step \(bestStep)) for \(patience) evaluation\(patience == 1 ? "" : "s")"
    }
}

/// Evaluation during training: each set's masked loss, sharded across the ranks by ``Evaluation/run``
/// (the code of `zero-sft eval`), at step 0, every `every` steps and after the last step.
///
/// Evaluation builds its own inference-only ``DecoderModel`` and reads the trainer's parameters through
/// the engine's ``UnitStore`` scopes: it never writes the trainer's activations, gradients, moments or
/// data order, so training with and without it is bitwise the same.
public final class TrainingEvaluator {
    public let sets: [EvaluationSet]
    /// Evaluate after every this many optimizer steps (nil: only at step 0 and at the end).
    public let every: Int?
    /// Stop when the watched set has not improved for this many evaluations (nil: never).
    public let patience: Int?
    /// Examples longer than this are scored on their first `sequenceLength` tokens (training's `--seq-len`).
    public let sequenceLength: Int
    /// Most tokens per forward on each rank (training's micro-batch: `--micro-batch-size × --seq-len`).
    public let tokensPerForward: Int
    public private(set) var history: [EvaluationMetrics] = []
    private var best: (loss: Double, step: Int)?
    private var sinceImprovement = 0

    public init(sets: [EvaluationSet], every: Int?, patience: Int?, sequenceLength: Int, tokensPerForward: Int) {
        precondition(!sets.isEmpty, "TrainingEvaluator: no set")
        self.sets = sets
        self.every = every
        self.patience = patience
        self.sequenceLength = sequenceLength
        self.tokensPerForward = tokensPerForward
    }

    /// The set early stopping watches: `val` when present, else the first set.
    public var watchedSet: String {
        sets.contains { $0.name == EvaluationSet.validationName } ? EvaluationSet.validationName : sets[0].name
    }

    /// Whether the history (this run's evaluations, and those restored from a checkpoint's metrics)
    /// has the evaluation after `step` optimizer steps.
    public func hasEvaluated(step: Int) -> Bool { history.contains { $0.step == step } }

    /// Whether to evaluate after `completed` optimizer steps of `total`.
    public func isDue(afterStep completed: Int, of total: Int) -> Bool {
        completed == 0 || completed == total || every.map { completed % $0 == 0 } == true
    }

    /// Scores every set (a collective: every rank calls it at the same step) and, with a patience, says
    /// whether to stop.
    /// `stopRequest` (nil: none) is agreed on before every forward; a stop throws ``EvaluationStopped``
    /// and records nothing.
    public func evaluate(step: Int, config: ModelConfig, store: UnitStore, communicator: Communicator,
                         stopRequest: (() -> Int32)? = nil) throws -> (EvaluationMetrics, EarlyStop?) {
        let started = Date()
        var records: [String: EvaluationRecord] = [:]
        for set in sets {
            communicator.context = "evaluation of \(set.name) at step \(step)"
            let result = try Evaluation.run(set.examples, config: config, store: store, communicator: communicator,
                                            sequenceLength: sequenceLength, tokensPerForward: tokensPerForward,
                                            stopRequest: stopRequest)
            let start = history.first?.eval[set.name]?.loss ?? result.loss
            records[set.name] = EvaluationRecord(loss: result.loss, supervisedTokens: result.supervisedTokens,
                                                 deltaFromStart: result.loss - start)
        }
        let metrics = EvaluationMetrics(step: step, eval: records, seconds: Date().timeIntervalSince(started))
        return (metrics, record(metrics))
    }

    /// Adds `metrics` to the history and updates the patience: the early stop it triggers, if any.
    private func record(_ metrics: EvaluationMetrics) -> EarlyStop? {
        history.append(metrics)
        guard let loss = metrics.eval[watchedSet]?.loss else { return nil }
        if let best, loss >= best.loss {
            sinceImprovement += 1
            if let patience, sinceImprovement >= patience {
                return EarlyStop(step: metrics.step, set: watchedSet, patience: patience, bestLoss: best.loss, bestStep: best.step)
            }
        } else {
            best = (loss, metrics.step)
            sinceImprovement = 0
        }
        return nil
    }

    /// A resumed run: replays the evaluation lines of the checkpoint's metrics (`{"step", "eval", …}`
    /// objects; other lines are skipped) so that "since step 0" and the early-stop patience continue
    /// as in the uninterrupted run. Every rank reads the same lines, so every rank agrees.
    ///
    /// Throws when an evaluation line does not decode, or names other sets than this run evaluates
    /// (the eval sets must match to resume).
    public func restore(from metricsLines: [String]) throws {
        let decoder = JSONDecoder()
        for (index, line) in metricsLines.enumerated() {
            guard line.contains("\"eval\"") else { continue }
            let metrics: EvaluationMetrics
            do { metrics = try decoder.decode(EvaluationMetrics.self, from: Data(line.utf8)) } catch {
                continue  // a step line that mentions "eval" in no key: not an evaluation
            }
            let names = Set(sets.map(\.name))
            guard Set(metrics.eval.keys) == names else {
                throw OptionError(message: "the checkpoint's metrics line \(index + 1) evaluates the sets "
                    + "\(metrics.eval.keys.sorted().joined(separator: ", ")) but this run evaluates \(names.sorted().joined(separator: ", ")): "
                    + "resume with the same --eval-data and --val-fraction")
            }
            _ = record(metrics)
        }
    }

    /// The log line of an evaluation: each set's loss and its change since step 0.
    public func describe(_ metrics: EvaluationMetrics) -> String {
        "eval step \(metrics.step) | " + sets.compactMap { set in
            metrics.eval[set.name].map {
                "\(set.name) loss " + String(format: "%.4f (%+.4f since step 0, %d supervised)", $0.loss, $0.deltaFromStart, $0.supervisedTokens)
            }
        }.joined(separator: " | ") + String(format: " | %.1f s", metrics.seconds)
    }
}

/// `--val-fraction`: a deterministic held-out part of the training examples.
public enum ValidationSplit {
    /// Holds out `round(fraction × count)` examples (at least one): those with the smallest keys, where an
    /// example's key is a 64-bit hash of `seed` and its tokens and labels, ties broken by index. The split
    /// depends only on the seed and the examples, so it is the same on every rank and in every run, and
    /// identical examples sort together (they land on the same side unless they straddle the cut). Both
    /// parts keep the file's order.
    /// - Throws: ``OptionError`` when `fraction` is outside (0, 1) or either part would be empty.
    public static func split(_ examples: [SFTExample], fraction: Double, seed: UInt64) throws -> (training: [SFTExample], validation: [SFTExample]) {
        guard fraction > 0, fraction < 1 else { throw OptionError(message: "--val-fraction must be in (0, 1) (got \(fraction))") }
        let held = max(1, Int((fraction * Double(examples.count)).rounded()))
        guard held < examples.count else {
            throw OptionError(message: "--val-fraction \(fraction) of \(examples.count) example\(examples.count == 1 ? "" : "s") leaves nothing to train on")
        }
        let keys = examples.map { key($0, seed: seed) }
        let chosen = examples.indices.sorted { keys[$0] != keys[$1] ? keys[$0] < keys[$1] : $0 < $1 }.prefix(held)
        var isHeld = [Bool](repeating: false, count: examples.count)
        for index in chosen { isHeld[index] = true }
        var training: [SFTExample] = [], validation: [SFTExample] = []
        for (index, example) in examples.enumerated() {
            if isHeld[index] { validation.append(example) } else { training.append(example) }
        }
        return (training, validation)
    }

    /// FNV-1a over the seed, the ids and the labels, finished with SplitMix64's mixer.
    static func key(_ example: SFTExample, seed: UInt64) -> UInt64 {
        var hash: UInt64 = 0xCBF2_9CE4_8422_2325
        func mix(_ value: UInt64) {
            hash ^= value
            hash &*= 0x0000_0100_0000_01B3
        }
        mix(seed)
        mix(UInt64(example.count))
        for id in example.inputIDs { mix(UInt64(UInt32(bitPattern: id))) }
        for label in example.labels { mix(UInt64(UInt32(bitPattern: label))) }
        var z = hash
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
