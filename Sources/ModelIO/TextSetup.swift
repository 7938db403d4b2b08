import Checkpoints
import Foundation
import Models
import Tokenizers

/// A model's tokenizer and chat template, found from what `--model` names.
///
/// - An HF directory (or a `config.json` in one): `tokenizer.json` (with `tokenizer_config.json` for BOS/EOS),
///   else GPT-2 style `vocab.json` + `merges.txt`; the chat template from `chat_template.jinja`,
///   `chat_template.json` or `tokenizer_config.json`'s `chat_template` (a string, or a list of named
///   templates of which `default` is taken). A directory with neither tokenizer file but one `.gguf` file
///   uses the GGUF.
/// - A `.gguf` file: the tokenizer from `tokenizer.ggml.*` metadata, the template from `tokenizer.chat_template`.
/// - A preset name: no tokenizer (random-init models have none), an error when text is needed.
public struct TextSetup: Sendable {
    public let tokenizer: Tokenizer
    /// The model's own Jinja chat template, if it has one.
    public let chatTemplateSource: String?
    /// Where the tokenizer came from, for logs (e.g. "models/x.gguf (GGUF metadata)").
    public let origin: String
    /// SHA-256 (hex) of what defines the tokenizer: the bytes of `tokenizer.json` (or `vocab.json` and
    /// `merges.txt`), or a GGUF's `tokenizer.ggml.*` tokens, merges, types and pre-tokenizer name; then the
    /// BOS/EOS ids and the vocabulary size. A prepared token file records it (``Training/PreparedFile``).
    public let fingerprint: String

    public init(tokenizer: Tokenizer, chatTemplateSource: String?, origin: String, definition: [UInt8] = []) {
        self.tokenizer = tokenizer
        self.chatTemplateSource = chatTemplateSource
        self.origin = origin
        var hasher = SHA256()
        hasher.update(definition)
        hasher.update(field: "bos \(tokenizer.bosTokenID.map(String.init) ?? "none") eos \(tokenizer.eosTokenID.map(String.init) ?? "none") "
                      + "vocabulary \(tokenizer.vocabularySize)")
        self.fingerprint = SHA256.hex(hasher.finalize())
    }

    /// Loads the tokenizer and the template source of `model` (see the type's documentation), for commands
    /// that need only the tokenizer (`tokenize`): a directory need not hold a model. Commands that load the
    /// model take ``ModelSource/textSetup()`` instead, which reads no file twice.
    public static func load(model: String) throws -> TextSetup {
        if ModelPreset.config(named: model) != nil {
            throw TextSetupError(
                model: model,
                message: "is a preset (random initialisation) and has no tokenizer: text needs an HF directory "
                    + "(tokenizer.json or vocab.json + merges.txt) or a .gguf file; or give pre-tokenized data "
                    + "({\"input_ids\": [...], \"labels\": [...]} per line)")
        }
        let url = URL(fileURLWithPath: model)
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: url.path, isDirectory: &isDirectory) else {
            throw TextSetupError(
                model: model, message: "does not exist (expected a preset name, an HF directory or a .gguf file)")
        }
        if !isDirectory.boolValue {
            if url.pathExtension.lowercased() == "gguf" { return try gguf(url) }
            if url.lastPathComponent.hasSuffix(".json") { return try directory(ModelFiles(directory: url.deletingLastPathComponent()), model: model) }
            throw TextSetupError(model: model, message: "is a file but neither a .gguf nor an HF config.json")
        }
        return try directory(ModelFiles(directory: url), model: model)
    }

    /// The tokenizer and template source of a model directory, its files read through `files` (once each).
    public static func directory(_ files: ModelFiles, model: String) throws -> TextSetup {
        let tokenizer: Tokenizer
        let origin: String
        var definition: [UInt8] = []
        if let tokenizerJSON = try files.data("tokenizer.json") {
            definition = Array(tokenizerJSON)
            let config = try files.data("tokenizer_config.json").map { (data: $0, url: files.url("tokenizer_config.json")) }
            tokenizer = try Tokenizer(tokenizerJSON: tokenizerJSON, url: files.url("tokenizer.json"), tokenizerConfigJSON: config)
            origin = files.url("tokenizer.json").path
        } else if files.contains("vocab.json"), files.contains("merges.txt") {
            tokenizer = try Tokenizer(vocabJSON: files.url("vocab.json"), mergesTXT: files.url("merges.txt"))
            definition = Array(try files.data("vocab.json") ?? Data()) + [0] + Array(try files.data("merges.txt") ?? Data())
            origin = files.url("vocab.json + merges.txt").path
        } else {
            let ggufs = files.names(endingWith: ".gguf")
            if ggufs.count == 1 { return try gguf(files.url(ggufs[0])) }
            throw TextSetupError(
                model: model,
                message: "has no tokenizer: expected tokenizer.json, or vocab.json and merges.txt, or a single .gguf file"
                    + (ggufs.count > 1 ? " (found \(ggufs.count) .gguf files: name one)" : ""))
        }
        return TextSetup(tokenizer: tokenizer, chatTemplateSource: try chatTemplateSource(in: files), origin: origin, definition: definition)
    }

    /// `chat_template.jinja`, `chat_template.json` (`{"chat_template": "…"}`) or `tokenizer_config.json`'s
    /// `chat_template` (string, or `[{"name": "default", "template": "…"}, …]`), in that order.
    static func chatTemplateSource(in files: ModelFiles) throws -> String? {
        if let jinja = try files.data("chat_template.jinja") {
            // Every byte kept, as transformers' open(path, encoding="utf-8").read(); invalid UTF-8 names its offset.
            return try TextBytes.decode(Array(jinja), source: files.url("chat_template.jinja").path)
        }
        for name in ["chat_template.json", "tokenizer_config.json"] {
            let url = files.url(name)
            guard let data = try files.data(name) else { continue }
            let object: Any
            do { object = try JSONSerialization.jsonObject(with: data) } catch {
                throw TextSetupError(model: url.path, message: "is not valid JSON: \((error as NSError).userInfo[NSDebugDescriptionErrorKey] as? String ?? "malformed")")
            }
            guard let value = (object as? [String: Any])?["chat_template"], !(value is NSNull) else { continue }
            if let text = value as? String { return text }
            if let list = value as? [[String: Any]] {
                if let entry = list.first(where: { $0["name"] as? String == "default" }), let text = entry["template"] as? String {
                    return text
                }
                throw TextSetupError(
                    model: url.path,
                    message: "chat_template is a list without a \"default\" entry (found \(list.compactMap { $0["name"] as? String }))")
            }
            throw TextSetupError(model: url.path, message: "chat_template is neither a string nor a list of named templates")
        }
        return nil
    }

    /// The tokenizer and template from a GGUF file's metadata (`tokenizer.ggml.model` must be `gpt2`).
    public static func gguf(_ url: URL) throws -> TextSetup {
        try gguf(file: GGUFFile(url: url))
    }

    /// The tokenizer and template of an opened GGUF file (no second parse of its metadata).
    public static func gguf(file: GGUFFile) throws -> TextSetup {
        let url = file.url
        let metadata = file.metadata
        func missing(_ key: String, _ expected: String) -> TextSetupError {
            TextSetupError(model: url.path, message: "metadata \(key): expected \(expected), found \(metadata[key].map { "\($0.typeName)" } ?? "nothing")")
        }
        guard let model = metadata["tokenizer.ggml.model"]?.string else { throw missing("tokenizer.ggml.model", "a string") }
        guard model == "gpt2" else {
            throw TextSetupError(
                model: url.path,
                message: "metadata tokenizer.ggml.model is \"\(model)\": only byte-level BPE (\"gpt2\") tokenizers are supported")
        }
        guard let tokens = metadata["tokenizer.ggml.tokens"]?.stringArray else { throw missing("tokenizer.ggml.tokens", "an array of strings") }
        guard let merges = metadata["tokenizer.ggml.merges"]?.stringArray else { throw missing("tokenizer.ggml.merges", "an array of strings") }
        let types = metadata["tokenizer.ggml.token_type"]?.intArray ?? []
        let tokenizer = try Tokenizer(
            ggufTokens: tokens, merges: merges, tokenTypes: types, pre: metadata["tokenizer.ggml.pre"]?.string,
            bosTokenID: metadata["tokenizer.ggml.bos_token_id"]?.int, eosTokenID: metadata["tokenizer.ggml.eos_token_id"]?.int,
            addBOSToken: metadata["tokenizer.ggml.add_bos_token"]?.bool ?? false)
        var definition: [UInt8] = []
        for token in tokens { definition += Array(token.utf8) + [0] }
        definition += [1]
        for merge in merges { definition += Array(merge.utf8) + [0] }
        definition += Array("types \(types) pre \(metadata["tokenizer.ggml.pre"]?.string ?? "none")".utf8)
        return TextSetup(tokenizer: tokenizer, chatTemplateSource: metadata["tokenizer.chat_template"]?.string,
                         origin: "\(url.path) (GGUF metadata)", definition: definition)
    }
}

/// A model whose tokenizer cannot be found or read.
public struct TextSetupError: Error, CustomStringConvertible, Sendable {
    /// The `--model` value or the file at fault.
    public var model: String
    public var message: String
    public var description: String { "\(model): \(message)" }

    public init(model: String, message: String) {
        self.model = model
        self.message = message
    }
}
