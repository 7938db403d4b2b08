import Foundation
import Testing
import Tokenizers
import Training

/// Every data format and `--train-on` option against the generator's examples (data/expected.json), and
/// bad input, each with an error that names the file and line.
@Suite struct ChatDatasetTests {
    static let smolLM2Vocabulary = 49152

    static func encoder() throws -> ChatEncoder {
        try ChatFixtures.setup("smollm2").encoder(chatTemplate: nil)
    }

    static func load(_ url: URL, _ options: ChatDataOptions = ChatDataOptions()) throws -> LoadedData {
        try ChatDataset.load(from: url, vocabularySize: smolLM2Vocabulary, options: options, encoder: encoder)
    }

    static let files = ["messages.jsonl", "prompt_completion.jsonl", "alpaca.json", "alpaca.jsonl"]
    static let formats: [String: DataFormat] = [
        "messages.jsonl": .messages, "prompt_completion.jsonl": .promptCompletion, "alpaca.json": .alpaca, "alpaca.jsonl": .alpaca,
    ]

    @Test(arguments: files, TrainOn.allCases)
    func formatMatchesGenerator(file: String, trainOn: TrainOn) throws {
        let expected = try #require(try ChatFixtures.expectedData()[file]?[trainOn.rawValue])
        let loaded = try Self.load(ChatFixtures.url("data", file), ChatDataOptions(trainOn: trainOn))
        #expect(loaded.report.format == Self.formats[file])
        #expect(loaded.report.records == expected.count && loaded.examples.count == expected.count)
        for (index, (example, golden)) in zip(loaded.examples, expected).enumerated() {
            let ids = example.inputIDs.map(Int.init), labels = example.labels.map(Int.init)
            #expect(firstDifference(ids, golden.input_ids) == nil, "\(file) #\(index) \(trainOn): ids \(firstDifference(ids, golden.input_ids) ?? "")")
            #expect(firstDifference(labels, golden.labels) == nil,
                    "\(file) #\(index) \(trainOn): labels \(firstDifference(labels, golden.labels) ?? "")")
        }
    }

    /// Pre-tokenized files are read without a tokenizer, and equal what the text file gives.
    @Test func pretokenizedNeedsNoTokenizer() throws {
        struct NoTokenizer: Error {}
        let loaded = try ChatDataset.load(from: ChatFixtures.url("data", "pretokenized.jsonl"), vocabularySize: Self.smolLM2Vocabulary) {
            throw NoTokenizer()
        }
        #expect(loaded.report.format == .pretokenized)
        let text = try Self.load(ChatFixtures.url("data", "messages.jsonl"))
        #expect(loaded.examples == text.examples)
    }

    @Test func detectsFormatFromFirstRecord() throws {
        for file in Self.files {
            #expect(try ChatDataset.detectFormat(of: ChatFixtures.url("data", file)) == Self.formats[file])
        }
        #expect(try ChatDataset.detectFormat(of: ChatFixtures.url("data", "pretokenized.jsonl")) == .pretokenized)
    }

    /// Runs `body`, which must throw a DataError, and returns its description.
    static func dataError(_ body: () throws -> Void) -> String? {
        do {
            try body()
            return nil
        } catch let error as DataError {
            return error.description
        } catch {
            return "not a DataError: \(error)"
        }
    }

    @Test func malformedLineNamesFileAndLine() throws {
        let scratch = try Scratch()
        let url = try scratch.file("bad.jsonl", """
            {"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}

            {"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}
            """)
        let message = try #require(Self.dataError { _ = try Self.load(url) })
        #expect(message.hasPrefix("\(url.path):3: malformed JSON"), "\(message)")
    }

    @Test func unknownRole() throws {
        let scratch = try Scratch()
        let url = try scratch.file("role.jsonl", """
            {"messages": [{"role": "user", "content": "a"}, {"role": "tool", "content": "b"}]}
            """)
        let message = try #require(Self.dataError { _ = try Self.load(url) })
        #expect(message == "\(url.path):1: messages[1].role is \"tool\": expected system, user, assistant", "\(message)")
    }

    @Test func emptyAssistantMessage() throws {
        let scratch = try Scratch()
        for (name, text, location) in [
            ("messages.jsonl", #"{"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": " \n"}]}"#, "messages[1]"),
            ("alpaca.jsonl", #"{"instruction": "a", "input": "", "output": ""}"#, "\"output\""),
            ("pc.jsonl", #"{"prompt": "a", "completion": ""}"#, "the completion"),
        ] {
            let url = try scratch.file(name, "\n" + text + "\n")
            let message = try #require(Self.dataError { _ = try Self.load(url) })
            #expect(message == "\(url.path):2: \(location) is an empty assistant message: there is nothing to train on", "\(message)")
        }
    }

    /// A conversation without an assistant turn is skipped and counted; with --strict it is an error.
    @Test func unsupervisedConversationSkippedOrStrict() throws {
        let scratch = try Scratch()
        let url = try scratch.file("unsupervised.jsonl", """
            {"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}
            {"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "no answer"}]}
            {"messages": [{"role": "user", "content": "c"}, {"role": "assistant", "content": "d"}]}
            """)
        let loaded = try Self.load(url)
        #expect(loaded.examples.count == 2 && loaded.report.records == 3)
        #expect(loaded.report.skippedUnsupervised == [2])
        #expect(loaded.recordNumbers == [1, 3])
        #expect(loaded.report.summary.contains("1 skipped: no supervised token (line 2)"), "\(loaded.report.summary)")

        let message = try #require(Self.dataError { _ = try Self.load(url, ChatDataOptions(strict: true)) })
        #expect(message.hasPrefix("\(url.path):2: no supervised token"), "\(message)")

        // With --train-on all the prompt is trained, so nothing is skipped.
        #expect(try Self.load(url, ChatDataOptions(trainOn: .all)).examples.count == 3)
    }

    @Test func otherBadInput() throws {
        let scratch = try Scratch()
        let cases: [(String, String, String)] = [
            ("keys.jsonl", #"{"text": "hello"}"#, ":1: unrecognised record: expected the keys"),
            ("mixed.jsonl", "{\"prompt\": \"a\", \"completion\": \"b\"}\n{\"instruction\": \"a\", \"output\": \"b\"}",
             ":2: a alpaca record in a prompt/completion file"),
            ("content.jsonl", #"{"messages": [{"role": "user", "content": 3}]}"#, ":1: messages[0].content must be a string, found a number"),
            ("empty-list.jsonl", #"{"messages": []}"#, ":1: \"messages\" is an empty list"),
            ("not-object.jsonl", "\"text\"\n", ":1: expected a JSON object, found a string"),
            ("not-object.json", "[1, 2]\n", ": record 1: expected a JSON object, found a number"),
            ("empty.jsonl", "\n\n", ": no examples (the file is empty)"),
            ("array.json", #"[{"instruction": "a", "output": "b"}, {"instruction": "a", "output": 7}]"#,
             ": record 2: \"output\" must be a string, found a number"),
            ("completion-role.jsonl", #"{"prompt": "a", "completion": [{"role": "user", "content": "b"}]}"#,
             ":1: completion[0].role is \"user\": a completion holds assistant messages"),
        ]
        for (name, text, expected) in cases {
            let url = try scratch.file(name, text)
            let message = try #require(Self.dataError { _ = try Self.load(url) }, "\(name) loaded without an error")
            #expect(message.hasPrefix(url.path + expected), "\(name): \(message)")
        }
        let missing = try #require(Self.dataError { _ = try Self.load(scratch.url.appendingPathComponent("missing.jsonl")) })
        #expect(missing.contains("cannot read"))
    }

    /// Text ids above the model's vocabulary are refused (a tokenizer larger than the model's embedding).
    @Test func idsBeyondTheModelVocabulary() throws {
        let message = try #require(Self.dataError {
            _ = try ChatDataset.load(from: ChatFixtures.url("data", "messages.jsonl"), vocabularySize: 1000, encoder: Self.encoder)
        })
        #expect(message.contains(":1: token id") && message.contains("outside the model's vocabulary (0..<1000)"), "\(message)")
    }

    /// OpenAI's list-of-parts content is joined; extra keys are ignored.
    @Test func contentParts() throws {
        let scratch = try Scratch()
        let url = try scratch.file("parts.jsonl", """
            {"messages": [{"role": "user", "content": [{"type": "text", "text": "What is "}, {"type": "text", "text": "2+2?"}]}, {"role": "assistant", "content": "4"}], "source": "x"}
            """)
        let encoder = try Self.encoder()
        let expected = encoder.example([.user("What is 2+2?"), .assistant("4")])
        #expect(try Self.load(url).examples == [expected])
    }
}
