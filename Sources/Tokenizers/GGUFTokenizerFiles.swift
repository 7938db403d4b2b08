import Checkpoints
import Foundation

/// HF tokenizer files (`tokenizer.json`, `tokenizer_config.json`) rebuilt from a GGUF's `tokenizer.ggml.*`
/// metadata, for exporting a GGUF model as an HF directory.
///
/// The pipeline matches what ``Tokenizer/init(ggufTokens:merges:tokenTypes:pre:bosTokenID:eosTokenID:addBOSToken:)``
/// builds from the same metadata, written in `tokenizers`' JSON schema: a BPE model with the GGUF
/// vocabulary and merges; control tokens (type 3) as special added tokens and user-defined ones
/// (type 4) as plain added tokens; the pre-tokenizer, normalizer and `ignore_merges` chosen by
/// `tokenizer.ggml.pre` (`smollm`, `gpt-2`/`default`, `llama-bpe`, `qwen2`); a ByteLevel decoder; BOS
/// prepended by the post-processor when `tokenizer.ggml.add_bos_token` is true. The config carries
/// the special tokens and `tokenizer.chat_template`.
public enum GGUFTokenizerFiles {
    /// `tokenizer.json` and `tokenizer_config.json` for the GGUF's tokenizer.
    /// Throws `TokenizerError` naming the metadata key when the tokenizer is missing or unsupported.
    public static func make(from metadata: [String: GGUFValue], source: String) throws -> (tokenizerJSON: Data, tokenizerConfigJSON: Data) {
        func fail(_ key: String, _ expected: String, _ found: String) -> TokenizerError {
            TokenizerError(file: source, location: key, expected: expected, found: found)
        }
        let model = metadata["tokenizer.ggml.model"]?.string
        guard model == "gpt2" else {
            throw fail("tokenizer.ggml.model", "\"gpt2\" (byte-level BPE)", model.map { "\"\($0)\"" } ?? "no such key")
        }
        guard let tokens = metadata["tokenizer.ggml.tokens"]?.stringArray else {
            throw fail("tokenizer.ggml.tokens", "an array of strings", "\(metadata["tokenizer.ggml.tokens"].map { $0.typeName } ?? "no such key")")
        }
        let merges = metadata["tokenizer.ggml.merges"]?.stringArray ?? []
        let types = metadata["tokenizer.ggml.token_type"]?.intArray ?? []
        let pre = metadata["tokenizer.ggml.pre"]?.string ?? "default"
        let bos = metadata["tokenizer.ggml.bos_token_id"]?.int
        let eos = metadata["tokenizer.ggml.eos_token_id"]?.int
        let unknown = metadata["tokenizer.ggml.unknown_token_id"]?.int
        let padding = metadata["tokenizer.ggml.padding_token_id"]?.int
        let addBOS = metadata["tokenizer.ggml.add_bos_token"]?.bool ?? false
        func token(_ id: Int?) -> String? { id.flatMap { tokens.indices.contains($0) ? tokens[$0] : nil } }

        var vocabulary: [String: Int] = [:]
        vocabulary.reserveCapacity(tokens.count)
        for (id, token) in tokens.enumerated() { vocabulary[token] = id }   // a repeated token keeps its last id
        // The vocabulary (in id order) and merges are written as JSON text directly: JSONSerialization
        // with sorted keys takes seconds on a 50k-entry object.
        var vocabularyJSON = "{"
        var first = true
        for (id, token) in tokens.enumerated() where vocabulary[token] == id {
            if !first { vocabularyJSON += "," }
            first = false
            vocabularyJSON += JSONText.string(token) + ":" + String(id)
        }
        vocabularyJSON += "}"
        var mergesJSON = "["
        for (index, merge) in merges.enumerated() {
            let parts = merge.split(separator: " ", omittingEmptySubsequences: false)
            guard parts.count == 2 else { throw fail("tokenizer.ggml.merges[\(index)]", "\"left right\"", "\"\(merge)\"") }
            if index > 0 { mergesJSON += "," }
            mergesJSON += "[" + JSONText.string(String(parts[0])) + "," + JSONText.string(String(parts[1])) + "]"
        }
        mergesJSON += "]"
        var added: [[String: Any]] = []
        for (id, type) in types.enumerated() where (type == 3 || type == 4) && vocabulary[tokens[id]] == id {
            added.append(["id": id, "content": tokens[id], "single_word": false, "lstrip": false, "rstrip": false,
                          "normalized": type != 3, "special": type == 3])
        }

        let byteLevel: (Bool) -> [String: Any] = { useRegex in
            ["type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": useRegex]
        }
        let preTokenizer: [String: Any]
        var normalizer: Any = NSNull()
        var ignoreMerges = false
        switch pre {
        case "smollm":
            preTokenizer = ["type": "Sequence", "pretokenizers": [["type": "Digits", "individual_digits": true], byteLevel(true)]]
        case "gpt-2", "gpt2", "default":
            preTokenizer = byteLevel(true)
        case "llama-bpe", "llama3", "llama-v3", "qwen2":
            let pattern = pre == "qwen2" ? SplitRegex.qwen2Pattern : SplitRegex.llama3Pattern
            preTokenizer = ["type": "Sequence", "pretokenizers": [
                ["type": "Split", "pattern": ["Regex": pattern], "behavior": "Isolated", "invert": false], byteLevel(false)]]
            if pre == "qwen2" { normalizer = ["type": "NFC"] } else { ignoreMerges = true }
        default:
            throw fail("tokenizer.ggml.pre", "one of smollm, gpt-2, default, llama-bpe, qwen2", "\"\(pre)\"")
        }
        var postProcessor: [String: Any] = ["type": "ByteLevel", "add_prefix_space": true, "trim_offsets": false, "use_regex": true]
        if addBOS, let bos, let bosToken = token(bos) {
            postProcessor = [
                "type": "TemplateProcessing",
                "single": [["SpecialToken": ["id": bosToken, "type_id": 0]], ["Sequence": ["id": "A", "type_id": 0]]],
                "pair": [["SpecialToken": ["id": bosToken, "type_id": 0]], ["Sequence": ["id": "A", "type_id": 0]],
                         ["SpecialToken": ["id": bosToken, "type_id": 1]], ["Sequence": ["id": "B", "type_id": 1]]],
                "special_tokens": [bosToken: ["id": bosToken, "ids": [bos], "tokens": [bosToken]]],
            ]
        }
        let tokenizer: [String: Any] = [
            "version": "1.0", "truncation": NSNull(), "padding": NSNull(), "added_tokens": added,
            "normalizer": normalizer, "pre_tokenizer": preTokenizer, "post_processor": postProcessor,
            "decoder": ["type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true],
            "model": ["type": "BPE", "dropout": NSNull(), "unk_token": NSNull(), "continuing_subword_prefix": NSNull(),
                      "end_of_word_suffix": NSNull(), "fuse_unk": false, "byte_fallback": false, "ignore_merges": ignoreMerges,
                      "vocab": "\u{1}VOCAB", "merges": "\u{1}MERGES"],
        ]
        var config: [String: Any] = [
            "tokenizer_class": "PreTrainedTokenizerFast", "add_bos_token": addBOS, "add_eos_token": false,
            "clean_up_tokenization_spaces": false,
        ]
        config["bos_token"] = token(bos)
        config["eos_token"] = token(eos)
        config["unk_token"] = token(unknown)
        config["pad_token"] = token(padding)
        if let template = metadata["tokenizer.chat_template"]?.string { config["chat_template"] = template }
        if let arch = metadata["general.architecture"]?.string, let context = metadata["\(arch).context_length"]?.int {
            config["model_max_length"] = context
        }
        let options: JSONSerialization.WritingOptions = [.sortedKeys, .withoutEscapingSlashes]
        do {
            var text = String(decoding: try JSONSerialization.data(withJSONObject: tokenizer, options: options), as: UTF8.self)
            text = text.replacingOccurrences(of: "\"\\u0001VOCAB\"", with: vocabularyJSON)
                .replacingOccurrences(of: "\"\\u0001MERGES\"", with: mergesJSON)
            return (Data(text.utf8),
                    try JSONSerialization.data(withJSONObject: config, options: options.union(.prettyPrinted)))
        } catch {
            throw fail("tokenizer.ggml.tokens", "strings that JSON can hold", "\(error)")
        }
    }
}
