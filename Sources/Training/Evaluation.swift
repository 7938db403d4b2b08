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
    public static func run(
        _ examples: [SFTExample], config: ModelConfig, store: UnitStore, communicator: Communicator,
        sequenceLength: Int, tokensPerForward: Int
    ) throws -> EvaluationResult {
        let started = Date()
        let ranks = communicator.size, rank = communicator.rank
        let capacity = max(tokensPerForward, sequenceLength)
        // This rank's forwards.
        var batches: [[(inputIDs: [Int32], labels: [Int32])]] = [[]]
        var used = 0, truncated = 0
        for index in stride(from: rank, to: examples.count, by: ranks) {
            let example = examples[index]
            if example.count > sequenceLength { truncated += 1 }
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
            let batch = index < batches.count ? TokenBatch(examples: batches[index]) : .empty
            let result = try model.step(batch, store: store, lossScale: 0, training: false)
            lossSum += result.lossSum
            supervised += result.count
            tokens += batch.count
        }
        let totals = try communicator.allReduce([lossSum, Double(supervised), Double(tokens), Double(truncated)], .sum)
        let seconds = try communicator.allReduce(Date().timeIntervalSince(started), .max)
        return EvaluationResult(loss: totals[1] > 0 ? totals[0] / totals[1] : 0, supervisedTokens: Int(totals[1]),
                                tokens: Int(totals[2]), examples: examples.count, truncatedExamples: Int(totals[3]),
                                ranks: ranks, seconds: seconds)
    }
}
