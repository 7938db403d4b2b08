import ArgumentParser
import Foundation
import ModelIO
import Training

/// `train`'s evaluation options: the sets scored during training and when (docs/evaluation.md).
struct EvaluationArguments: ParsableArguments {
    @Option(name: .customLong("eval-data"), help: ArgumentHelp(
        "A set scored during training, NAME=PATH (repeatable; any format --data takes). A general-text reference set shows forgetting.",
        valueName: "name=path"))
    var evalData: [String] = []
    @Option(name: .long, help: "Evaluate every this many optimizer steps (default: only at step 0 and after the last step).")
    var evalEvery: Int?
    @Option(name: .long, help: "Hold out this fraction of --data (deterministic from --seed and the examples) as the eval set `val`.")
    var valFraction: Double?
    @Option(name: .long, help: ArgumentHelp(
        "Stop when `val` (else the first --eval-data set) has not improved for this many evaluations; the run then ends normally.",
        valueName: "patience"))
    var earlyStop: Int?

    /// `--eval-data` split into names and paths, in the order given.
    func namedPaths() throws -> [(name: String, path: String)] {
        var result: [(name: String, path: String)] = []
        for argument in evalData {
            guard let equals = argument.firstIndex(of: "="), case let name = String(argument[..<equals]),
                  case let path = String(argument[argument.index(after: equals)...]), !path.isEmpty
            else { throw ValidationError("--eval-data \(argument): expected NAME=PATH") }
            guard EvaluationSet.isValidName(name) else {
                throw ValidationError("--eval-data \(argument): the name \"\(name)\" must be letters, digits, '_', '-' or '.'")
            }
            if result.contains(where: { $0.name == name }) { throw ValidationError("--eval-data: the name \"\(name)\" is given twice") }
            if name == EvaluationSet.validationName, valFraction != nil {
                throw ValidationError("--eval-data \(argument): \"\(name)\" is the set --val-fraction holds out; choose another name")
            }
            result.append((name, path))
        }
        return result
    }

    var hasSets: Bool { !evalData.isEmpty || valFraction != nil }

    func validate() throws {
        _ = try namedPaths()
        if let evalEvery, evalEvery < 1 { throw ValidationError("--eval-every must be at least 1 (got \(evalEvery))") }
        if let valFraction, !(valFraction > 0 && valFraction < 1) { throw ValidationError("--val-fraction must be in (0, 1) (got \(valFraction))") }
        if let earlyStop, earlyStop < 1 { throw ValidationError("--early-stop must be at least 1 (got \(earlyStop))") }
        if !hasSets, evalEvery != nil || earlyStop != nil {
            throw ValidationError("--\(evalEvery != nil ? "eval-every" : "early-stop") needs a set to evaluate: --eval-data NAME=PATH or --val-fraction F")
        }
        if earlyStop != nil, evalEvery == nil { throw ValidationError("--early-stop needs --eval-every (without it there are only two evaluations)") }
    }

    /// Loads every `--eval-data` set as `--data` is loaded and holds out `val` from `training`: before any
    /// rank starts work, identically on every rank. Returns the examples left to train on and the sets
    /// (`val` first).
    func prepare(training: [SFTExample], text: TextDataOptions, data: String, source: ModelSource, vocabularySize: Int,
                 options: TrainingOptions) throws -> (training: [SFTExample], sets: [EvaluationSet]) {
        var training = training, sets: [EvaluationSet] = [], paths: [String] = []
        if let valFraction {
            let split: (training: [SFTExample], validation: [SFTExample])
            do { split = try ValidationSplit.split(training, fraction: valFraction, seed: options.seed) } catch let error as OptionError {
                throw EvaluationDataError(name: EvaluationSet.validationName, path: data, message: error.message)
            }
            training = split.training
            sets.append(EvaluationSet(name: EvaluationSet.validationName, examples: split.validation))
            paths.append(data)
        }
        for (name, path) in try namedPaths() {
            let examples: [SFTExample]
            do { examples = try text.load(data: path, source: source, vocabularySize: vocabularySize).examples } catch {
                throw EvaluationDataError(name: name, path: path, message: "\(error)")
            }
            sets.append(EvaluationSet(name: name, examples: examples))
            paths.append(path)
        }
        for (set, path) in zip(sets, paths) {
            do { try EmptyEvaluationError.check(set.examples, sequenceLength: options.sequenceLength) } catch {
                throw EvaluationDataError(name: set.name, path: path, message: "\(error)")
            }
        }
        return (training, sets)
    }

    func evaluator(sets: [EvaluationSet], options: TrainingOptions) -> TrainingEvaluator? {
        sets.isEmpty ? nil : TrainingEvaluator(sets: sets, every: evalEvery, patience: earlyStop, sequenceLength: options.sequenceLength,
                                               tokensPerForward: options.microBatchSize * options.sequenceLength)
    }
}

/// An eval set that cannot be used, naming the set and its file.
struct EvaluationDataError: Error, CustomStringConvertible {
    var name: String
    var path: String
    var message: String
    var description: String { "eval set \"\(name)\" (\(path)): \(message)" }
}
