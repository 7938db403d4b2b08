import Foundation
import ModelIO
import Testing
import Tokenizers
import Training

/// `--long-examples truncate|split|drop|error`, and packing on the real corpora when they are present.
@Suite struct LongExampleTests {
    /// A conversation of `turns` question/answer pairs of growing length, with or without a system prompt.
    static func conversation(turns: Int, system: Bool, seed: Int) -> [ChatMessage] {
        var messages: [ChatMessage] = system ? [.system("You answer in full sentences.")] : []
        for turn in 0..<turns {
            let words = (0..<(3 + (turn * 7 + seed) % 23)).map { "word\(($0 * 13 + turn + seed) % 97)" }.joined(separator: " ")
            messages.append(.user("Question \(turn): what about \(words)?"))
            messages.append(.assistant("Answer \(turn): " + String(repeating: "\(words). ", count: 1 + (turn + seed) % 4)))
        }
        return messages
    }

    /// The pieces of a split conversation are exactly the template's tokenization of (system + some of its
    /// messages), never longer than the limit, and together train every supervised token once.
    @Test(arguments: ["smollm2", "qwen2", "llama3"], [false, true])
    func splitPiecesAreTemplateTokenizationsAndLoseNothing(tokenizer: String, system: Bool) throws {
        let encoder = try ChatFixtures.setup(tokenizer).encoder(chatTemplate: nil)
        for seed in 0..<4 {
            let messages = Self.conversation(turns: 9, system: system, seed: seed)
            let whole = encoder.example(messages)
            let boundaries = try #require(encoder.turnBoundaries(messages, ids: whole.inputIDs.map(Int.init)), "\(tokenizer): no boundaries")
            let limit = whole.count / 3
            let (pieces, truncated) = LongExamples.split(whole, at: boundaries, limit: limit)
            #expect(truncated == 0, "\(tokenizer) seed \(seed): a turn exceeds \(limit)")
            #expect(pieces.count >= 3)
            #expect(pieces.allSatisfy { $0.count <= limit })
            #expect(pieces.reduce(0) { $0 + $1.supervisedCount } == whole.supervisedCount,
                    "\(tokenizer) seed \(seed): \(pieces.reduce(0) { $0 + $1.supervisedCount }) of \(whole.supervisedCount) supervised tokens")
            // Each piece is the encoder's example of the system prompt and a run of messages, the earlier
            // ones (context) not trained: find that run.
            let systemMessages = system ? [messages[0]] : []
            let rest = Array(messages[systemMessages.count...])
            var nextTrained = 0
            for (number, piece) in pieces.enumerated() {
                var found = false
                search: for contextStart in 0..<rest.count {
                    for end in (contextStart + 1)...rest.count {
                        let reference = encoder.example(systemMessages + Array(rest[contextStart..<end]))
                        guard reference.inputIDs == piece.inputIDs else { continue }
                        // The trained messages start at a turn; the context before them is masked.
                        let trainedStart = piece.labels.firstIndex { $0 != -100 } ?? 0
                        #expect(zip(piece.labels, reference.labels).enumerated().allSatisfy { position, pair in
                            position < trainedStart ? pair.0 == -100 : pair.0 == pair.1
                        }, "\(tokenizer) piece \(number): labels are not the reference's after the context")
                        #expect(end > nextTrained)
                        nextTrained = end
                        found = true
                        break search
                    }
                }
                #expect(found, "\(tokenizer) seed \(seed) piece \(number): not the tokenization of any message run")
            }
        }
    }

    /// A turn longer than the limit is trained without its prompt, then cut, and counted.
    @Test func aTurnLongerThanTheLimitIsCutAndCounted() throws {
        let encoder = try ChatFixtures.setup("smollm2").encoder(chatTemplate: nil)
        let messages: [ChatMessage] = [.user("Hi"), .assistant("Hello there."), .user("Tell me a long story please."),
                                       .assistant(String(repeating: "Once upon a time. ", count: 40)), .user("Thanks"), .assistant("You are welcome.")]
        let whole = encoder.example(messages)
        let boundaries = try #require(encoder.turnBoundaries(messages, ids: whole.inputIDs.map(Int.init)))
        let (pieces, truncated) = LongExamples.split(whole, at: boundaries, limit: 100)
        #expect(truncated == 1)
        #expect(pieces.allSatisfy { $0.count <= 100 })
        // The long answer's piece starts right after the system prompt with its assistant header: no question.
        let story = try #require(pieces.first { $0.count == 100 })
        let header = encoder.tokenizer.encode("<|im_start|>assistant").map(Int32.init)
        #expect(Array(story.inputIDs[boundaries.prefixEnd..<(boundaries.prefixEnd + header.count)]) == header)
    }

    func write(_ lines: [String]) throws -> URL {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("zero-sft-long-\(UUID().uuidString).jsonl")
        try lines.joined(separator: "\n").write(to: url, atomically: true, encoding: .utf8)
        return url
    }

    static func record(_ messages: [ChatMessage]) throws -> String {
        let list = messages.map { ["role": $0.role.rawValue, "content": $0.content] }
        return String(decoding: try JSONSerialization.data(withJSONObject: ["messages": list], options: [.sortedKeys]), as: UTF8.self)
    }

    @Test func policiesOnAFile() throws {
        let short: [ChatMessage] = [.user("Hi"), .assistant("Hello.")]
        let long = Self.conversation(turns: 8, system: false, seed: 1)
        let url = try write([try Self.record(short), try Self.record(long), try Self.record(short)])
        defer { try? FileManager.default.removeItem(at: url) }
        func load(_ policy: LongExamplePolicy) throws -> LoadedData {
            try ChatDataset.load(from: url, vocabularySize: ChatDatasetTests.smolLM2Vocabulary,
                                 options: ChatDataOptions(sequenceLength: 400, longExamples: policy), encoder: ChatDatasetTests.encoder)
        }
        let whole = try ChatDatasetTests.encoder().example(long)
        #expect(whole.count > 400)

        let truncated = try load(.truncate)
        #expect(truncated.examples.count == 3 && truncated.report.long?.count == 1 && truncated.report.long?.first == 2)
        #expect(truncated.report.summary.contains("1 longer than --seq-len 400 (the first: line 2), truncated"), "\(truncated.report.summary)")

        let dropped = try load(.drop)
        #expect(dropped.examples.count == 2 && dropped.recordNumbers == [1, 3])
        #expect(dropped.report.summary.contains("dropped with their \(whole.supervisedCount) supervised tokens"), "\(dropped.report.summary)")

        let error = #expect(throws: DataError.self) { _ = try load(.error) }
        #expect(error?.line == 2 && "\(error!)".contains("\(whole.count) tokens, longer than --seq-len 400"), "\(String(describing: error))")

        let split = try load(.split)
        let report = try #require(split.report.long)
        #expect(report.truncatedPieces == 0)
        #expect(report.split == 1 && report.pieces == split.examples.count - 2 && report.pieces >= 2)
        #expect(report.kept == whole.supervisedCount && report.keptByTruncation < report.kept)
        #expect(split.examples.allSatisfy { $0.count <= 400 })
        #expect(split.recordNumbers == [1] + [Int](repeating: 2, count: report.pieces) + [3])
        #expect(split.report.summary.contains("1 split into \(report.pieces) examples: \(whole.supervisedCount) of their \(whole.supervisedCount) supervised tokens kept"),
                "\(split.report.summary)")
    }

    /// Pre-tokenized records carry no turns: `split` is refused by name; the other policies apply.
    @Test func preTokenizedDataRefusesSplit() throws {
        let url = try write([#"{"input_ids": [1, 2, 3, 4, 5, 6], "labels": [-100, -100, 3, 4, 5, 6]}"#, #"{"input_ids": [1, 2], "labels": [-100, 2]}"#])
        defer { try? FileManager.default.removeItem(at: url) }
        func load(_ policy: LongExamplePolicy) throws -> LoadedData {
            try ChatDataset.load(from: url, vocabularySize: 256, options: ChatDataOptions(sequenceLength: 4, longExamples: policy)) {
                struct NoTokenizer: Error {}
                throw NoTokenizer()
            }
        }
        #expect { _ = try load(.split) } throws: { "\($0)".contains("--long-examples split cuts conversations at turn boundaries, which pre-tokenized records do not carry") }
        #expect(try load(.drop).examples.count == 1)
        #expect(try load(.truncate).report.long?.keptByTruncation == 2)  // labels 3 and 4 of [-100, -100, 3, 4]
        #expect { _ = try load(.error) } throws: { ($0 as? DataError)?.line == 1 }
    }

    /// The real corpora (not in CI, which fetches the model only): print the packing and split figures the
    /// docs quote, and hold BFD to the issue's ≥ 97% on chatterbot at 512.
    @Test func realCorporaIfPresent() throws {
        let root = ChatFixtures.packageRoot
        guard FileManager.default.fileExists(atPath: ChatFixtures.smolLM2GGUF.path) else { return print("corpora: skipped (no SmolLM2 GGUF)") }
        for name in ["chatterbot", "chitchat"] {
            let data = root.appendingPathComponent("data/\(name)-train.jsonl")
            guard FileManager.default.fileExists(atPath: data.path) else {
                print("\(name): skipped (data/\(name)-train.jsonl is absent)")
                continue
            }
            let setup = try TextSetup.load(model: ChatFixtures.smolLM2GGUF.path)
            for length in [256, 512] {
                for policy in [LongExamplePolicy.truncate, .split] {
                    let loaded = try ChatDataset.load(from: data, vocabularySize: 49152,
                                                      options: ChatDataOptions(sequenceLength: length, longExamples: policy)) { try setup.encoder(chatTemplate: nil) }
                    var line = "\(name) at \(length), \(policy.rawValue): \(loaded.report.long?.summary ?? "")\n "
                    for method in PackingMethod.allCases {
                        let plan = TrainingPlan(examples: loaded.examples, sequenceLength: length, microBatchSize: 1, gradientAccumulation: 1,
                                                ranks: 1, seed: 42, packing: method)
                        line += String(format: " %@ %.1f%% (%d rows)", method.rawValue, plan.report.fill * 100, plan.report.rowsPerEpoch)
                        if name == "chatterbot" && method == .bfd && length == 512 { #expect(plan.report.fill >= 0.97, "\(plan.report.summary)") }
                    }
                    print(line)
                }
            }
        }
    }
}
