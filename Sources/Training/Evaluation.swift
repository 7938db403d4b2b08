import Collectives
import Foundation
import Kernels
import Models
import Sharding

/// The masked loss of a dataset, as `zero-sft eval` prints it (the last line, one JSON object).
public struct EvaluationResult: Sendable, Encodable, Equatable {
    /// Mean negative log-likelihood over the supervised tokens (nats).
    public var loss: Double
    public var supervisedTokens: Int
    /// Tokens run through the model (after truncation).
    public var tokens: Int
    public var examples: Int
    /// Examples longer than the sequence length, evaluated on their first `sequenceLength` tokens.
    public var truncatedExamples: Int
    public var perplexity: Double { exp(loss) }
    public var ranks: Int
    public var seconds: Double

    enum CodingKeys: String, CodingKey {
        case loss, tokens, examples, ranks, seconds, perplexity
        case supervisedTokens = "supervised_tokens"
        case truncatedExamples = "truncated_examples"
    }

    public func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(loss, forKey: .loss)
        try c.encode(supervisedTokens, forKey: .supervisedTokens)
        try c.encode(tokens, forKey: .tokens)
        try c.encode(examples, forKey: .examples)
        try c.encode(truncatedExamples, forKey: .truncatedExamples)
        try c.encode(perplexity, forKey: .perplexity)
        try c.encode(ranks, forKey: .ranks)
        try c.encode(seconds, forKey: .seconds)
    }
}

/// Evaluation without training, sharded across ranks: rank `r` takes examples `r, r + N, …` and packs
/// them into forwards of at most `tokensPerForward` tokens (examples never attend to each other);
/// the loss sums and counts are all-reduced, so the result is the same for any number of ranks (up
/// to the order of the floating-point sums).
public enum Evaluation {
    /// - Parameters:
    ///   - store: the parameters: a ``DenseUnitStore`` (every rank holds the model), a
    ///     ``ShardedParameters`` (stage 3: each rank holds a shard, no gradient or optimizer memory) or
    ///     a trainer's ``ZeroEngine``; every rank runs the same number of forwards.
    ///   - sequenceLength: longer examples are cut to their first `sequenceLength` tokens (and counted).
    ///   - stopRequest: nil, or this rank's stop request (``StopSignals/received``), agreed on by an
    ///     all-reduce of two counters before every forward (``StopSignals/agreementCounts(_:)``).
    /// - Throws: ``EvaluationStopped`` when a rank asked to stop (on every rank, between the same two
    ///   forwards), ``EmptyEvaluationError``, and the collectives' errors.
    public static func run(
        _ examples: any ExampleSource, config: ModelConfig, store: UnitStore, communicator: Communicator,
        sequenceLength: Int, tokensPerForward: Int, stopRequest: (() -> Int32)? = nil
    ) throws -> EvaluationResult {
        let started = Date()
        let ranks = communicator.size, rank = communicator.rank
        let capacity = max(tokensPerForward, sequenceLength)
        // This rank's forwards.
        var batches: [[(inputIDs: [Int32], labels: [Int32])]] = [[]]
        var used = 0, truncated = 0, emptiedByTruncation = 0
        for index in stride(from: rank, to: examples.count, by: ranks) {
            let example = examples.example(index)
            if example.count > sequenceLength {
                truncated += 1
                if !example.labels.prefix(sequenceLength).dropFirst().contains(where: { $0 != -100 }),
                   example.labels.dropFirst(max(1, sequenceLength)).contains(where: { $0 != -100 }) { emptiedByTruncation += 1 }
            }
            let ids = Array(example.inputIDs.prefix(sequenceLength)), labels = Array(example.labels.prefix(sequenceLength))
            if used + ids.count > capacity, !batches[batches.count - 1].isEmpty {
                batches.append([])
                used = 0
            }
            batches[batches.count - 1].append((ids, labels))
            used += ids.count
        }
        if batches.last?.isEmpty == true { batches.removeLast() }
        // With a sharded store every rank must take part in every forward's gathers: every rank runs
        // as many forwards as the busiest (a missing one is empty).
        let forwards = Int(try communicator.allReduce([Int64(batches.count)], .max)[0])
        let model = DecoderModel(config: config, maxTokens: capacity, training: false)
        var lossSum = 0.0, supervised = 0, tokens = 0
        for index in 0..<forwards {
            if let stopRequest {
                // Every rank runs the same number of forwards, so the agreement is a collective in step.
                let sums = try communicator.allReduce(StopSignals.agreementCounts(stopRequest()), .sum)
                if let signal = StopSignals.agreed(sums[...]) { throw EvaluationStopped(signal: signal) }
            }
            let batch = index < batches.count ? TokenBatch(examples: batches[index]) : .empty
            let result = try model.step(batch, store: store, lossScale: 0, training: false)
            lossSum += result.lossSum
            supervised += result.count
            tokens += batch.count
        }
        let totals = try communicator.allReduce([lossSum, Double(supervised), Double(tokens), Double(truncated), Double(emptiedByTruncation)], .sum)
        let seconds = try communicator.allReduce(Date().timeIntervalSince(started), .max)
        // Every rank sees the same totals, so every rank throws (a mean over nothing is not a loss of 0).
        guard totals[1] > 0 else {
            throw EmptyEvaluationError(examples: examples.count, truncatedExamples: Int(totals[4]), sequenceLength: sequenceLength)
        }
        return EvaluationResult(loss: totals[0] / totals[1], supervisedTokens: Int(totals[1]),
                                tokens: Int(totals[2]), examples: examples.count, truncatedExamples: Int(totals[3]),
                                ranks: ranks, seconds: seconds)
    }
}

/// A stop signal (SIGTERM, SIGINT) that the ranks agreed on during an evaluation: the evaluation was
/// abandoned between two forwards, on every rank.
public struct EvaluationStopped: Error, Equatable {
    public var signal: Int32
    public init(signal: Int32) { self.signal = signal }
}

/// An evaluation with no supervised token to score: every label is -100, or every supervised label lies
/// beyond `sequenceLength`. The mean loss over nothing is undefined; reporting 0 (perplexity 1) would
/// read as a perfect model.
public struct EmptyEvaluationError: Error, CustomStringConvertible, Equatable {
    public var examples: Int
    /// Examples whose supervised labels all lie past `sequenceLength` (0 when every label is -100).
    public var truncatedExamples: Int
    public var sequenceLength: Int

    public init(examples: Int, truncatedExamples: Int, sequenceLength: Int) {
        self.examples = examples
        self.truncatedExamples = truncatedExamples
        self.sequenceLength = sequenceLength
    }

    /// Throws when no example keeps a supervised token within its first `sequenceLength` tokens: the
    /// check a command makes before any rank starts work.
    public static func check(_ examples: any ExampleSource, sequenceLength: Int) throws(EmptyEvaluationError) {
        var cutOff = 0
        for index in 0..<examples.count {
            let example = examples.example(index)
            // A label at position t is scored when 0 < t < sequenceLength (nothing predicts position 0).
            if example.labels.prefix(sequenceLength).dropFirst().contains(where: { $0 != -100 }) { return }
            if example.labels.dropFirst(max(1, sequenceLength)).contains(where: { $0 != -100 }) { cutOff += 1 }
        }
        throw EmptyEvaluationError(examples: examples.count, truncatedExamples: cutOff, sequenceLength: sequenceLength)
    }

    public var description: String {
        var text = "nothing to evaluate: no supervised token in \(examples) example\(examples == 1 ? "" : "s")"
        if truncatedExamples > 0 {
            text += " within the first \(sequenceLength) tokens (\(truncatedExamples) have supervised tokens only past --seq-len \(sequenceLength): raise it)"
        } else {
            text += " (every label is -100)"
        }
        return text + ": a loss over zero tokens is undefined"
    }
}
