import Foundation
import ModelIO
import Tokenizers
import Training

/// The committed fixtures of `tools/generate_chat_fixtures.py` and the tokenizers they refer to.
enum ChatFixtures {
    static let directory: URL = {
        guard let url = Bundle.module.url(forResource: "Fixtures", withExtension: nil) else {
            fatalError("the Fixtures resource folder is missing from the ChatDataTests bundle")
        }
        return url
    }()

    static func url(_ parts: String...) -> URL {
        parts.reduce(directory) { $0.appendingPathComponent($1) }
    }

    /// The package root, from this file's path.
    static let packageRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    /// SmolLM2's tokenizer.json is the tokenizer fixtures' copy (1.5 MB, not committed twice).
    static let smolLM2TokenizerJSON = packageRoot.appendingPathComponent("Tests/TokenizersTests/Fixtures/smollm2/tokenizer.json")

    /// The real SmolLM2 GGUF; tests that need it fail with this advice when it is missing.
    static let smolLM2GGUF = packageRoot.appendingPathComponent("models/SmolLM2-135M-Instruct.Q4_1.gguf")
    static let fetchAdvice = "models/SmolLM2-135M-Instruct.Q4_1.gguf is missing: run launch/fetch-smollm2"

    /// An HF tokenizer directory for SmolLM2, assembled in a scratch folder (tokenizer.json + the fixture's
    /// tokenizer_config.json with the GGUF's chat template).
    static let smolLM2Directory: URL = {
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("zero-sft-smollm2-tokenizer-\(getpid())")
        try? FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        for (source, name) in [(smolLM2TokenizerJSON, "tokenizer.json"), (url("smollm2", "tokenizer_config.json"), "tokenizer_config.json")] {
            let target = folder.appendingPathComponent(name)
            if !FileManager.default.fileExists(atPath: target.path) { try? FileManager.default.copyItem(at: source, to: target) }
        }
        return folder
    }()

    /// The model directory of each golden tokenizer.
    static func modelDirectory(_ name: String) -> URL {
        switch name {
        case "smollm2": smolLM2Directory
        case "qwen2": url("qwen2-chat")
        case "llama3", "llama3-chat": url("llama3-chat")
        default: fatalError("no tokenizer fixture named \(name)")
        }
    }

    /// Text setups, loaded once.
    static let setups: [String: Result<TextSetup, any Error>] = {
        var result: [String: Result<TextSetup, any Error>] = [:]
        for name in ["smollm2", "qwen2", "llama3"] {
            result[name] = Result { try TextSetup.load(model: modelDirectory(name).path) }
        }
        return result
    }()

    static func setup(_ name: String) throws -> TextSetup {
        try setups[name == "llama3-chat" ? "llama3" : name]!.get()
    }

    struct Message: Decodable {
        var role: String
        var content: String
        var chat: ChatMessage { ChatMessage(role: ChatMessage.Role(rawValue: role)!, content: content) }
    }

    struct GenerationPrompt: Decodable {
        var messages: [Message]
        var text: String
        var input_ids: [Int]
    }

    struct ConversationCase: Decodable {
        var template: String
        var messages: [Message]
        var text: String
        var input_ids: [Int]
        var assistant_mask: [Int]
        var last_mask: [Int]
        var generation_prompt: GenerationPrompt
    }

    struct PlainCase: Decodable {
        var tokenizer: String
        var prompt: String
        var completion: String
        var text: String
        var input_ids: [Int]
        var completion_mask: [Int]
    }

    struct Goldens: Decodable {
        var transformers_version: String
        var templates: [String: String]
        var conversations: [ConversationCase]
        var plain: [PlainCase]
    }

    static let goldens: Goldens = {
        do { return try JSONDecoder().decode(Goldens.self, from: Data(contentsOf: url("goldens.json"))) } catch {
            fatalError("goldens.json cannot be read: \(error)")
        }
    }()

    struct ExpectedExample: Decodable {
        var input_ids: [Int]
        var labels: [Int]
    }

    /// data/expected.json: file → --train-on option → examples.
    static func expectedData() throws -> [String: [String: [ExpectedExample]]] {
        try JSONDecoder().decode([String: [String: [ExpectedExample]]].self, from: Data(contentsOf: url("data", "expected.json")))
    }
}

/// A scratch directory removed when the value goes away.
final class Scratch {
    let url: URL
    init() throws {
        url = FileManager.default.temporaryDirectory.appendingPathComponent("zero-sft-chatdata-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
    }
    deinit { try? FileManager.default.removeItem(at: url) }

    /// Writes `text` to a file named `name` and returns its URL.
    func file(_ name: String, _ text: String) throws -> URL {
        let file = url.appendingPathComponent(name)
        try text.write(to: file, atomically: true, encoding: .utf8)
        return file
    }
}

/// The first position where two sequences differ, with a window of both around it, for failure messages.
func firstDifference<T: Equatable>(_ found: [T], _ expected: [T]) -> String? {
    if found == expected { return nil }
    let index = zip(found, expected).enumerated().first { $0.element.0 != $0.element.1 }?.offset ?? min(found.count, expected.count)
    let window = max(0, index - 3)..<(index + 4)
    return "first difference at \(index) (found \(found.count) entries, expected \(expected.count)): found "
        + "\(found[window.clamped(to: found.indices)]), expected \(expected[window.clamped(to: expected.indices)])"
}
