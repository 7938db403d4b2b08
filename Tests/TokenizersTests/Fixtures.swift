import Foundation
import Tokenizers

/// The committed fixtures (see `tools/generate_tokenizer_fixtures.py`) and the tokenizers built from them,
/// loaded once and shared by all tests.
enum Fixtures {
    static let directory: URL = {
        guard let url = Bundle.module.url(forResource: "Fixtures", withExtension: nil) else {
            fatalError("the Fixtures resource folder is missing from the test bundle")
        }
        return url
    }()

    static func url(_ folder: String, _ file: String) -> URL {
        directory.appendingPathComponent(folder).appendingPathComponent(file)
    }

    /// The tokenizer names the generator wrote goldens for.
    static let names = ["smollm2", "gpt2", "llama3-synthetic", "qwen2-synthetic", "variety-synthetic"]

    static func load(_ name: String) throws -> Tokenizer {
        if name == "gpt2" {
            return try Tokenizer(vocabJSON: url("gpt2", "vocab.json"), mergesTXT: url("gpt2", "merges.txt"))
        }
        return try Tokenizer(tokenizerJSON: url(name, "tokenizer.json"))
    }

    /// Loaded once (Swift initialises static lets lazily and thread-safely).
    static let tokenizers: [String: Result<Tokenizer, any Error>] = {
        var result: [String: Result<Tokenizer, any Error>] = [:]
        for name in names { result[name] = Result { try load(name) } }
        return result
    }()

    static func tokenizer(_ name: String) throws -> Tokenizer {
        try tokenizers[name]!.get()
    }

    struct EncodeCase: Decodable {
        var text: String
        var ids: [Int]
        var ids_with_special_tokens: [Int]
    }

    struct DecodeCase: Decodable {
        var ids: [Int]
        var skip_special_tokens: Bool
        var text: String
    }

    struct Goldens: Decodable {
        var tokenizer: String
        var tokenizers_version: String
        var vocabulary_size: Int
        var encode: [EncodeCase]
        /// 400 random strings over edge-case characters and fragments (fixed seed).
        var fuzz: [EncodeCase]
        var decode: [DecodeCase]
    }

    static func goldens(_ name: String) throws -> Goldens {
        try JSONDecoder().decode(Goldens.self, from: Data(contentsOf: url(name, "goldens.json")))
    }
}

/// A readable, bounded rendering of a test text for failure messages (escapes controls and invisibles).
func describe(_ text: String, limit: Int = 120) -> String {
    var result = ""
    for scalar in text.unicodeScalars.prefix(limit) {
        switch scalar.value {
        case 0x20...0x7E:
            result.unicodeScalars.append(scalar)
        case 0xA1...0x10FFFF where !scalar.properties.isWhitespace && scalar.properties.generalCategory != .format:
            result.unicodeScalars.append(scalar)
        default:
            result += "\\u{\(String(scalar.value, radix: 16))}"
        }
    }
    if text.unicodeScalars.count > limit { result += "… (\(text.unicodeScalars.count) scalars)" }
    return "\"\(result)\""
}

/// Where two id lists first differ, with a window of each around that position; nil when equal.
func firstDifference(expected: [Int], found: [Int]) -> String? {
    if expected == found { return nil }
    let position = zip(expected, found).prefix(while: { $0 == $1 }).count
    let window = max(0, position - 3)..<(position + 5)
    return "first difference at position \(position) (expected \(expected.count) ids, found \(found.count)): "
        + "expected …\(Array(expected[window.clamped(to: expected.indices)])), "
        + "found …\(Array(found[window.clamped(to: found.indices)]))"
}
