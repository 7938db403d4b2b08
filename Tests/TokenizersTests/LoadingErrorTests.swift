import Foundation
import Testing
import Tokenizers

/// Bad or unsupported tokenizer files are refused with a `TokenizerError` naming the file, the place and
/// the component.
@Suite struct LoadingErrorTests {
    /// A fresh temporary folder for one test.
    static func temporaryDirectory() throws -> URL {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("tokenizer-tests-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
        return url
    }

    /// Writes the variety-synthetic tokenizer.json with `change` applied to its top-level object.
    static func modifiedTokenizerJSON(_ change: (inout [String: Any]) -> Void) throws -> URL {
        let data = try Data(contentsOf: Fixtures.url("variety-synthetic", "tokenizer.json"))
        var root = try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
        change(&root)
        let url = try temporaryDirectory().appendingPathComponent("tokenizer.json")
        try JSONSerialization.data(withJSONObject: root).write(to: url)
        return url
    }

    static func loadError(_ url: URL) -> TokenizerError? {
        #expect(throws: TokenizerError.self) { try Tokenizer(tokenizerJSON: url) }
    }

    @Test func malformedJSONNamesFileAndLine() throws {
        let url = try Self.temporaryDirectory().appendingPathComponent("tokenizer.json")
        try Data("{\n  \"version\": \"1.0\",\n  \"model\": [1, 2,, 3]\n}\n".utf8).write(to: url)
        let error = try #require(Self.loadError(url))
        #expect(error.file == url.path)
        #expect(error.location == "line 3, column 18")  // the second comma
        #expect(error.description.contains(url.path))
    }

    @Test func missingFileIsReported() throws {
        let url = try Self.temporaryDirectory().appendingPathComponent("absent.json")
        let error = try #require(Self.loadError(url))
        #expect(error.file == url.path)
        #expect(error.location == "file")
    }

    @Test func missingMergesFileIsReported() throws {
        let merges = try Self.temporaryDirectory().appendingPathComponent("merges.txt")
        let error = #expect(throws: TokenizerError.self) {
            try Tokenizer(vocabJSON: Fixtures.url("gpt2", "vocab.json"), mergesTXT: merges)
        }
        #expect(error?.file == merges.path)
        #expect(error?.location == "file")
    }

    @Test func malformedMergesLineIsReported() throws {
        let merges = try Self.temporaryDirectory().appendingPathComponent("merges.txt")
        try Data("#version: 0.2\nĠ t\nĠ a b\n".utf8).write(to: merges)
        let error = #expect(throws: TokenizerError.self) {
            try Tokenizer(vocabJSON: Fixtures.url("gpt2", "vocab.json"), mergesTXT: merges)
        }
        #expect(error?.file == merges.path)
        #expect(error?.location == "line 3")
    }

    @Test func mergeOutsideVocabularyIsReported() throws {
        let url = try Self.modifiedTokenizerJSON { root in
            var model = root["model"] as! [String: Any]
            model["merges"] = [["Ġ", "t"], ["Ġ", "zzzzzz"]]
            root["model"] = model
        }
        let error = try #require(Self.loadError(url))
        #expect(error.location == "model.merges[1]")
        #expect(error.found.contains("zzzzzz"))
    }

    @Test func unknownPreTokenizerTypeIsNamed() throws {
        let url = try Self.modifiedTokenizerJSON { root in
            root["pre_tokenizer"] = ["type": "Sequence", "pretokenizers": [["type": "Whitespace"], ["type": "ByteLevel", "add_prefix_space": false]]]
        }
        let error = try #require(Self.loadError(url))
        #expect(error.location == "pre_tokenizer.pretokenizers[0].type")
        #expect(error.found.contains("Whitespace"))
    }

    @Test func unknownSplitRegexIsRefused() throws {
        let url = try Self.modifiedTokenizerJSON { root in
            root["pre_tokenizer"] = [
                "type": "Sequence",
                "pretokenizers": [
                    ["type": "Split", "pattern": ["Regex": "\\s+|\\w+"], "behavior": "Isolated", "invert": false],
                    ["type": "ByteLevel", "add_prefix_space": false, "use_regex": false],
                ],
            ]
        }
        let error = try #require(Self.loadError(url))
        #expect(error.location == "pre_tokenizer.pretokenizers[0].pattern.Regex")
        #expect(error.found.contains("\\s+|\\w+"))
    }

    @Test func missingByteLevelIsRefused() throws {
        let url = try Self.modifiedTokenizerJSON { root in
            root["pre_tokenizer"] = ["type": "Digits", "individual_digits": true]
        }
        let error = try #require(Self.loadError(url))
        #expect(error.location == "pre_tokenizer")
        #expect(error.expected.contains("ByteLevel"))
    }

    @Test func unsupportedNormalizerIsNamed() throws {
        let url = try Self.modifiedTokenizerJSON { root in
            root["normalizer"] = ["type": "Sequence", "normalizers": [["type": "NFC"], ["type": "Lowercase"]]]
        }
        let error = try #require(Self.loadError(url))
        #expect(error.location == "normalizer.normalizers[1].type")
        #expect(error.found.contains("Lowercase"))
    }

    @Test func unsupportedModelIsNamed() throws {
        let url = try Self.modifiedTokenizerJSON { root in
            var model = root["model"] as! [String: Any]
            model["type"] = "WordPiece"
            root["model"] = model
        }
        let error = try #require(Self.loadError(url))
        #expect(error.location == "model.type")
        #expect(error.found.contains("WordPiece"))
    }

    @Test func unsupportedDecoderIsNamed() throws {
        let url = try Self.modifiedTokenizerJSON { root in
            root["decoder"] = ["type": "Metaspace", "replacement": "▁"]
        }
        let error = try #require(Self.loadError(url))
        #expect(error.location == "decoder.type")
        #expect(error.found.contains("Metaspace"))
    }

    @Test func unsupportedPostProcessorIsNamed() throws {
        let url = try Self.modifiedTokenizerJSON { root in
            root["post_processor"] = ["type": "RobertaProcessing", "sep": ["</s>", 2], "cls": ["<s>", 0]]
        }
        let error = try #require(Self.loadError(url))
        #expect(error.location == "post_processor.type")
        #expect(error.found.contains("RobertaProcessing"))
    }

    @Test func addedTokenWithInconsistentIDIsRefused() throws {
        let url = try Self.modifiedTokenizerJSON { root in
            var added = root["added_tokens"] as! [[String: Any]]
            added[0]["id"] = 777
            root["added_tokens"] = added
        }
        let error = try #require(Self.loadError(url))
        #expect(error.location.hasPrefix("added_tokens[0]"))
        #expect(error.found == "id 777")
    }

    @Test func truncationIsRefused() throws {
        let url = try Self.modifiedTokenizerJSON { root in
            root["truncation"] = ["max_length": 512, "strategy": "LongestFirst", "stride": 0, "direction": "Right"]
        }
        let error = try #require(Self.loadError(url))
        #expect(error.location == "truncation")
    }
}
