import Foundation

/// How the next token is chosen from the logits.
public struct SamplingOptions: Sendable, Equatable, Codable {
    /// 0 picks the most likely token (greedy); otherwise the logits are divided by it before the softmax.
    public var temperature: Double = 0
    /// Nucleus sampling: sample only from the smallest set of most likely tokens whose probabilities
    /// sum to at least `topP` (1 disables it).
    public var topP: Double = 1
    /// Sample only from the `topK` most likely tokens (0 disables it).
    public var topK: Int = 0
    /// Seed of the sampler's random numbers: the same seed, model and prompt give the same tokens.
    public var seed: UInt64 = 0

    public init(temperature: Double = 0, topP: Double = 1, topK: Int = 0, seed: UInt64 = 0) {
        self.temperature = temperature
        self.topP = topP
        self.topK = topK
        self.seed = seed
    }

    public var isGreedy: Bool { temperature == 0 }

    /// Rejects values outside their ranges, naming the option.
    public func validate() throws {
        guard temperature >= 0, temperature.isFinite else { throw GenerationError("--temperature must be 0 (greedy) or positive, got \(temperature)") }
        guard topP > 0, topP <= 1 else { throw GenerationError("--top-p must be in (0, 1], got \(topP)") }
        guard topK >= 0 else { throw GenerationError("--top-k must be 0 (off) or positive, got \(topK)") }
    }
}

/// Picks tokens from logits: greedy (argmax, lowest id on ties) or temperature / top-k / top-p sampling.
///
/// Sampling follows transformers' warper order: logits ÷ temperature, then top-k, then top-p on the
/// softmax of what is left (tokens sorted by probability, kept while the cumulative probability
/// before them is below `topP`, so at least one token stays), renormalise, draw. Random numbers come
/// from SplitMix64 seeded with `seed`, so runs are reproducible on every platform.
public struct TokenSampler: Sendable {
    public let options: SamplingOptions
    private var state: UInt64

    public init(_ options: SamplingOptions) {
        self.options = options
        self.state = options.seed
    }

    /// The next random number in [0, 1) (53 bits).
    mutating func uniform() -> Double {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        z ^= z >> 31
        return Double(z >> 11) * 0x1p-53
    }

    /// The id of the largest logit (the first one on ties).
    public static func argmax(_ logits: [Float]) -> Int {
        logits.withUnsafeBufferPointer { p in
            var best = 0
            for i in 1..<max(p.count, 1) where p[i] > p[best] { best = i }
            return best
        }
    }

    /// Chooses the next token from `logits (V)`.
    public mutating func next(_ logits: [Float]) -> Int {
        precondition(!logits.isEmpty, "TokenSampler.next: empty logits")
        if options.isGreedy { return Self.argmax(logits) }
        let inverse = 1 / options.temperature
        // Candidates sorted by logit, descending (ties: lower id first).
        var order = Array(logits.indices)
        order.sort { logits[$0] != logits[$1] ? logits[$0] > logits[$1] : $0 < $1 }
        if options.topK > 0 { order.removeSubrange(min(options.topK, order.count)...) }
        let maximum = Double(logits[order[0]]) * inverse
        var weights = order.map { exp(Double(logits[$0]) * inverse - maximum) }
        var total = weights.reduce(0, +)
        if options.topP < 1 {
            var cumulative = 0.0, keep = 0
            while keep < weights.count, cumulative < options.topP * total {
                cumulative += weights[keep]
                keep += 1
            }
            keep = max(keep, 1)
            weights.removeSubrange(keep...)
            order.removeSubrange(keep...)
            total = weights.reduce(0, +)
        }
        var target = uniform() * total
        for (index, weight) in weights.enumerated() {
            target -= weight
            if target < 0 { return order[index] }
        }
        return order[weights.count - 1]
    }
}
