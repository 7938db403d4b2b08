import Checkpoints
import Foundation
import Models
import Tokenizers

// MERGE: this whole file is the model side's stand-in for the chat-data work's tokenizer
// resolution and chat-template renderer. When merging, replace `PromptText.tokenizer(for:)` with the
// shared tokenizer resolver and `PromptText.render(_:system:...)` with the `ChatTemplate` renderer
// (same inputs: the conversation so far, whether to add the assistant generation prompt).

/// The tokenizer of a `--model`, and the text of a conversation in its chat format.
enum PromptText {
    /// One message of a conversation.
    struct Message: Equatable {
        var role: String
        var content: String
    }

    /// The model's tokenizer: `tokenizer.json` of an HF directory, or the GGUF's `tokenizer.ggml.*` metadata.
    static func tokenizer(for source: ModelSource) throws -> Tokenizer {
        if let gguf = source.gguf {
            let m = gguf.metadata
            guard let tokens = m["tokenizer.ggml.tokens"]?.stringArray else {
                throw TokenizerError(file: gguf.location, location: "tokenizer.ggml.tokens", expected: "an array of strings",
                                     found: m["tokenizer.ggml.tokens"]?.typeName ?? "no such key")
            }
            return try Tokenizer(ggufTokens: tokens, merges: m["tokenizer.ggml.merges"]?.stringArray ?? [],
                                 tokenTypes: m["tokenizer.ggml.token_type"]?.intArray ?? [], pre: m["tokenizer.ggml.pre"]?.string,
                                 bosTokenID: m["tokenizer.ggml.bos_token_id"]?.int, eosTokenID: m["tokenizer.ggml.eos_token_id"]?.int,
                                 addBOSToken: m["tokenizer.ggml.add_bos_token"]?.bool ?? false)
        }
        if let directory = source.directory {
            let json = directory.appendingPathComponent("tokenizer.json")
            if FileManager.default.fileExists(atPath: json.path) { return try Tokenizer(tokenizerJSON: json) }
            let vocab = directory.appendingPathComponent("vocab.json"), merges = directory.appendingPathComponent("merges.txt")
            if FileManager.default.fileExists(atPath: vocab.path) { return try Tokenizer(vocabJSON: vocab, mergesTXT: merges) }
        }
        throw TokenizerError(file: source.location, location: "--model", expected: "a GGUF file or an HF directory with tokenizer.json",
                             found: "no tokenizer (a preset has none)")
    }

    /// The chat template text of the model (GGUF `tokenizer.chat_template` or `tokenizer_config.json`'s), if any.
    static func chatTemplate(for source: ModelSource) -> String? {
        if let template = source.gguf?.metadata["tokenizer.chat_template"]?.string { return template }
        guard let directory = source.directory,
              let data = try? Data(contentsOf: directory.appendingPathComponent("tokenizer_config.json")),
              let object = try? JSONSerialization.jsonObject(with: data) as? [String: Any] else { return nil }
        return object["chat_template"] as? String
    }

    /// The default system prompt a ChatML template inserts when the conversation has none (SmolLM2's rule):
    /// the literal text between `<|im_start|>system\n` and `<|im_end|>` in the template.
    static func defaultSystemPrompt(template: String?) -> String? {
        guard let template, let start = template.range(of: "<|im_start|>system\n"),
              let end = template.range(of: "<|im_end|>", range: start.upperBound..<template.endIndex) else { return nil }
        let text = String(template[start.upperBound..<end.lowerBound])
        return text.contains("{{") || text.contains("{%") || text.contains("+") ? nil : text
    }

    /// ChatML: `<|im_start|>role\ncontent<|im_end|>\n` per message, then `<|im_start|>assistant\n` when
    /// `addGenerationPrompt`; a default system message first when the template has one and the
    /// conversation starts without a system message.
    static func render(_ messages: [Message], defaultSystem: String?, addGenerationPrompt: Bool) -> String {
        var text = ""
        if let defaultSystem, messages.first?.role != "system" {
            text += "<|im_start|>system\n\(defaultSystem)<|im_end|>\n"
        }
        for message in messages { text += "<|im_start|>\(message.role)\n\(message.content)<|im_end|>\n" }
        if addGenerationPrompt { text += "<|im_start|>assistant\n" }
        return text
    }

    /// Tokens that end a reply: the config's EOS ids, the tokenizer's EOS, and the end-of-turn markers
    /// of ChatML and Llama 3 when the vocabulary has them.
    static func stopTokens(tokenizer: Tokenizer, config: ModelConfig) -> Set<Int> {
        var stop = Set(config.eosTokenID?.ids ?? [])
        if let eos = tokenizer.eosTokenID { stop.insert(eos) }
        for marker in ["<|im_end|>", "<|eot_id|>", "<|end_of_text|>", "<|endoftext|>"] {
            if let id = tokenizer.id(of: marker) { stop.insert(id) }
        }
        return stop
    }
}
