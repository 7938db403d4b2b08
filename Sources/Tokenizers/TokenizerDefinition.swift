import Checkpoints
import Foundation

/// Everything a byte-level BPE tokenizer is made of, as read from one of the supported sources, before
/// it is validated and compiled into a `Tokenizer`.
struct TokenizerDefinition {
    /// Where it came from, for error messages.
    var source: String
    /// The model vocabulary: token string (byte-level characters) and id, in file order.
    var vocabulary: [(token: String, id: Int)]
    /// The merges in rank order, with where each came from (for errors).
    var merges: [(left: String, right: String, location: String)]
    var ignoreMerges = false
    var unknownToken: String?
    var fuseUnknown = false
    /// Added tokens in file order; `id` is the file's id (checked against HF's assignment).
    var addedTokens: [AddedToken] = []
    var normalizers: [NormalizerStep] = []
    var preTokenizer: [PreTokenizerStage]
    /// Post-processor templates applied in order when `addSpecialTokens` is true: ids before and after.
    var templates: [(prefix: [Int], suffix: [Int])] = []
    var bosToken: String?
    var eosToken: String?
}

/// Reads typed values out of parsed JSON, reporting the file and key path on failure.
struct JSONReader {
    let file: String

    func failure(_ path: String, expected: String, found: JSONValue?) -> TokenizerError {
        TokenizerError(file: file, location: path, expected: expected, found: found?.kindName ?? "nothing (key missing)")
    }

    func string(_ value: JSONValue?, _ path: String) throws(TokenizerError) -> String {
        guard case .string(let string) = value else { throw failure(path, expected: "a string", found: value) }
        return string
    }

    func optionalString(_ value: JSONValue?, _ path: String) throws(TokenizerError) -> String? {
        if value == nil { return nil }
        if case .null = value { return nil }
        return try string(value, path)
    }

    func bool(_ value: JSONValue?, _ path: String, default defaultValue: Bool) throws(TokenizerError) -> Bool {
        switch value {
        case nil, .null?: return defaultValue
        case .bool(let flag)?: return flag
        default: throw failure(path, expected: "true or false", found: value)
        }
    }

    func int(_ value: JSONValue?, _ path: String) throws(TokenizerError) -> Int {
        guard let number = value?.double, number >= 0, number < 2_147_483_648, number.rounded() == number else {
            throw failure(path, expected: "a non-negative integer below 2^31", found: value)
        }
        return Int(number)
    }

    func array(_ value: JSONValue?, _ path: String) throws(TokenizerError) -> [JSONValue] {
        guard case .array(let items) = value else { throw failure(path, expected: "an array", found: value) }
        return items
    }

    func object(_ value: JSONValue?, _ path: String) throws(TokenizerError) -> [(key: String, value: JSONValue)] {
        guard case .object(let pairs) = value else { throw failure(path, expected: "an object", found: value) }
        return pairs
    }

    func isNull(_ value: JSONValue?) -> Bool {
        switch value {
        case nil, .null?: return true
        default: return false
        }
    }

    static func parse(contentsOf url: URL) throws(TokenizerError) -> JSONValue {
        try parse(readFile(url), file: url)
    }

    static func parse(_ bytes: [UInt8], file url: URL) throws(TokenizerError) -> JSONValue {
        do {
            return try JSONParser.parse(bytes)
        } catch {
            throw TokenizerError(
                file: url.path, location: "line \(error.line), column \(error.column)", expected: "valid JSON",
                found: error.message)
        }
    }

    /// The file's bytes. A leading byte-order mark is refused with its own message: HF `tokenizers`
    /// (serde_json, `BPE::read_file`) and `transformers` (`json.load` of a UTF-8 text file) refuse it too.
    static func readFile(_ url: URL) throws(TokenizerError) -> [UInt8] {
        let bytes: [UInt8]
        do {
            bytes = try FileContents.read(url.path)
        } catch {
            throw TokenizerError(file: url.path, location: "file", expected: "a readable file", found: "\(error.operation) failed: \(error.reason)")
        }
        if TextBytes.startsWithByteOrderMark(bytes) {
            throw TokenizerError(file: url.path, location: "byte 0", expected: "UTF-8 without a byte-order mark (HF tokenizers refuses one too)",
                                 found: "the byte-order mark EF BB BF")
        }
        return bytes
    }
}

// MARK: - tokenizer.json

extension TokenizerDefinition {
    /// Reads an HF `tokenizer.json` (and, when given, the `bos_token`/`eos_token` of a `tokenizer_config.json`).
    static func tokenizerJSON(_ url: URL, config configURL: URL?) throws(TokenizerError) -> TokenizerDefinition {
        var config: (bytes: [UInt8], url: URL)?
        if let configURL { config = (try JSONReader.readFile(configURL), configURL) }
        return try tokenizerJSON(JSONReader.readFile(url), url: url, config: config)
    }

    /// The same from bytes already read (`url`s name the files in errors).
    static func tokenizerJSON(_ bytes: [UInt8], url: URL, config configFile: (bytes: [UInt8], url: URL)?) throws(TokenizerError) -> TokenizerDefinition {
        let root = try JSONReader.parse(bytes, file: url)
        let reader = JSONReader(file: url.path)
        _ = try reader.object(root, "(top level)")

        if let version = root["version"], !reader.isNull(version) {
            let text = try reader.string(version, "version")
            if text != "1.0" { throw reader.failure("version", expected: "\"1.0\"", found: version) }
        }
        for key in ["truncation", "padding"] where !reader.isNull(root[key]) {
            throw reader.failure(key, expected: "null (truncation and padding belong in the data pipeline)", found: root[key])
        }

        // Model.
        guard let model = root["model"] else { throw reader.failure("model", expected: "a BPE model", found: nil) }
        _ = try reader.object(model, "model")
        if let type = model["type"] {
            let name = try reader.string(type, "model.type")
            if name != "BPE" { throw reader.failure("model.type", expected: "\"BPE\" (the only supported model)", found: type) }
        }
        if let dropout = model["dropout"], !reader.isNull(dropout) {
            guard dropout.double == 0 else {
                throw reader.failure("model.dropout", expected: "null (BPE dropout is not supported)", found: dropout)
            }
        }
        if try reader.bool(model["byte_fallback"], "model.byte_fallback", default: false) {
            throw reader.failure("model.byte_fallback", expected: "false (byte-level BPE needs no byte fallback)", found: model["byte_fallback"])
        }
        for key in ["continuing_subword_prefix", "end_of_word_suffix"] {
            let value = try reader.optionalString(model[key], "model.\(key)")
            if let value, !value.isEmpty {
                throw reader.failure("model.\(key)", expected: "null or \"\" (not used by byte-level BPE)", found: model[key])
            }
        }
        var vocabulary: [(token: String, id: Int)] = []
        let vocabPairs = try reader.object(model["vocab"], "model.vocab")
        vocabulary.reserveCapacity(vocabPairs.count)
        for (token, value) in vocabPairs {
            vocabulary.append((token, try reader.int(value, "model.vocab[\"\(token)\"]")))
        }
        var merges: [(left: String, right: String, location: String)] = []
        let mergeItems = try reader.array(model["merges"], "model.merges")
        merges.reserveCapacity(mergeItems.count)
        for (index, item) in mergeItems.enumerated() {
            let path = "model.merges[\(index)]"
            switch item {
            case .string(let line):
                let parts = line.split(separator: " ", omittingEmptySubsequences: false)
                guard parts.count == 2 else {
                    throw reader.failure(path, expected: "\"left right\" (two tokens separated by one space)", found: item)
                }
                merges.append((String(parts[0]), String(parts[1]), path))
            case .array(let pair):
                guard pair.count == 2 else { throw reader.failure(path, expected: "a pair [left, right]", found: item) }
                merges.append((try reader.string(pair[0], path + "[0]"), try reader.string(pair[1], path + "[1]"), path))
            default:
                throw reader.failure(path, expected: "\"left right\" or [left, right]", found: item)
            }
        }

        var definition = TokenizerDefinition(source: url.path, vocabulary: vocabulary, merges: merges, preTokenizer: [])
        definition.ignoreMerges = try reader.bool(model["ignore_merges"], "model.ignore_merges", default: false)
        definition.unknownToken = try reader.optionalString(model["unk_token"], "model.unk_token")
        definition.fuseUnknown = try reader.bool(model["fuse_unk"], "model.fuse_unk", default: false)

        // Added tokens.
        if !reader.isNull(root["added_tokens"]) {
            for (index, item) in try reader.array(root["added_tokens"], "added_tokens").enumerated() {
                let path = "added_tokens[\(index)]"
                _ = try reader.object(item, path)
                let special = try reader.bool(item["special"], path + ".special", default: false)
                definition.addedTokens.append(
                    AddedToken(
                        content: try reader.string(item["content"], path + ".content"),
                        id: try reader.int(item["id"], path + ".id"),
                        special: special,
                        singleWord: try reader.bool(item["single_word"], path + ".single_word", default: false),
                        leftStrip: try reader.bool(item["lstrip"], path + ".lstrip", default: false),
                        rightStrip: try reader.bool(item["rstrip"], path + ".rstrip", default: false),
                        normalized: try reader.bool(item["normalized"], path + ".normalized", default: !special)))
            }
        }

        definition.normalizers = try normalizers(root["normalizer"], "normalizer", reader)
        definition.preTokenizer = try preTokenizers(root["pre_tokenizer"], "pre_tokenizer", reader)
        try checkByteLevelPipeline(definition.preTokenizer, reader)
        try checkDecoder(root["decoder"], "decoder", reader)
        definition.templates = try postProcessors(root["post_processor"], "post_processor", reader)

        // BOS/EOS: tokenizer_config.json when present, else the template's leading special token.
        if let (configBytes, configURL) = configFile {
            let config = try JSONReader.parse(configBytes, file: configURL)
            let configReader = JSONReader(file: configURL.path)
            func tokenName(_ key: String) throws(TokenizerError) -> String? {
                switch config[key] {
                case nil, .null?: return nil
                case .string(let name)?: return name
                case .object?: return try configReader.string(config[key]?["content"], key + ".content")
                default: throw configReader.failure(key, expected: "a token string or {\"content\": …}", found: config[key])
                }
            }
            definition.bosToken = try tokenName("bos_token")
            definition.eosToken = try tokenName("eos_token")
        }
        return definition
    }

    private static func normalizers(_ value: JSONValue?, _ path: String, _ reader: JSONReader) throws(TokenizerError) -> [NormalizerStep] {
        if reader.isNull(value) { return [] }
        let type = try reader.string(value?["type"], path + ".type")
        if type == "Sequence" {
            var steps: [NormalizerStep] = []
            for (index, item) in try reader.array(value?["normalizers"], path + ".normalizers").enumerated() {
                steps += try normalizers(item, "\(path).normalizers[\(index)]", reader)
            }
            return steps
        }
        guard let step = NormalizerStep(rawValue: type) else {
            throw reader.failure(path + ".type", expected: "null, NFC, NFD, NFKC, NFKD or a Sequence of them (supported normalizers)", found: value?["type"])
        }
        return [step]
    }

    private static func preTokenizers(_ value: JSONValue?, _ path: String, _ reader: JSONReader) throws(TokenizerError) -> [PreTokenizerStage] {
        if reader.isNull(value) {
            throw reader.failure(path, expected: "a pre-tokenizer ending with ByteLevel (byte-level BPE)", found: value)
        }
        let type = try reader.string(value?["type"], path + ".type")
        switch type {
        case "Sequence":
            var stages: [PreTokenizerStage] = []
            for (index, item) in try reader.array(value?["pretokenizers"], path + ".pretokenizers").enumerated() {
                stages += try preTokenizers(item, "\(path).pretokenizers[\(index)]", reader)
            }
            return stages
        case "ByteLevel":
            return [
                .byteLevel(
                    addPrefixSpace: try reader.bool(value?["add_prefix_space"], path + ".add_prefix_space", default: true),
                    useRegex: try reader.bool(value?["use_regex"], path + ".use_regex", default: true))
            ]
        case "Digits":
            return [.digits(individual: try reader.bool(value?["individual_digits"], path + ".individual_digits", default: false))]
        case "Split":
            let patternPath = path + ".pattern"
            let patternObject = try reader.object(value?["pattern"], patternPath)
            let pattern: SplitPattern
            if let literal = patternObject.first(where: { $0.key == "String" })?.value {
                let text = try reader.string(literal, patternPath + ".String")
                if text.isEmpty { throw reader.failure(patternPath + ".String", expected: "a non-empty string", found: literal) }
                pattern = .literal(Array(text.utf8))
            } else if let regexValue = patternObject.first(where: { $0.key == "Regex" })?.value {
                let text = try reader.string(regexValue, patternPath + ".Regex")
                guard let regex = SplitRegex(pattern: text) else {
                    throw reader.failure(
                        patternPath + ".Regex",
                        expected: "one of the supported regexes (GPT-2, Llama-3, Qwen2 pre-tokenization patterns, exact text)",
                        found: regexValue)
                }
                pattern = .regex(regex)
            } else {
                throw reader.failure(patternPath, expected: "{\"String\": …} or {\"Regex\": …}", found: value?["pattern"])
            }
            let behaviorName = try reader.string(value?["behavior"], path + ".behavior")
            guard let behavior = SplitBehavior(rawValue: behaviorName) else {
                throw reader.failure(
                    path + ".behavior", expected: SplitBehavior.allCases.map(\.rawValue).joined(separator: ", "), found: value?["behavior"])
            }
            return [.split(pattern, behavior, invert: try reader.bool(value?["invert"], path + ".invert", default: false))]
        default:
            throw reader.failure(
                path + ".type", expected: "ByteLevel, Split, Digits or a Sequence of them (supported pre-tokenizers)", found: value?["type"])
        }
    }

    private static func checkByteLevelPipeline(_ stages: [PreTokenizerStage], _ reader: JSONReader) throws(TokenizerError) {
        let byteLevelCount = stages.filter { if case .byteLevel = $0 { return true } else { return false } }.count
        guard byteLevelCount == 1, case .byteLevel = stages.last else {
            throw TokenizerError(
                file: reader.file, location: "pre_tokenizer", expected: "exactly one ByteLevel pre-tokenizer, as the last step",
                found: "\(byteLevelCount) ByteLevel step(s) in \(stages.count) step(s)")
        }
    }

    private static func checkDecoder(_ value: JSONValue?, _ path: String, _ reader: JSONReader) throws(TokenizerError) {
        guard !reader.isNull(value) else {
            throw reader.failure(path, expected: "a ByteLevel decoder", found: value)
        }
        let type = try reader.string(value?["type"], path + ".type")
        if type == "ByteLevel" { return }
        if type == "Sequence" {
            let items = try reader.array(value?["decoders"], path + ".decoders")
            if items.count == 1 { return try checkDecoder(items[0], path + ".decoders[0]", reader) }
        }
        throw reader.failure(path + ".type", expected: "ByteLevel (the only supported decoder)", found: value?["type"])
    }

    private static func postProcessors(
        _ value: JSONValue?, _ path: String, _ reader: JSONReader
    ) throws(TokenizerError) -> [(prefix: [Int], suffix: [Int])] {
        if reader.isNull(value) { return [] }
        let type = try reader.string(value?["type"], path + ".type")
        switch type {
        case "ByteLevel":
            return []  // only trims offsets; ids unchanged
        case "Sequence":
            var templates: [(prefix: [Int], suffix: [Int])] = []
            for (index, item) in try reader.array(value?["processors"], path + ".processors").enumerated() {
                templates += try postProcessors(item, "\(path).processors[\(index)]", reader)
            }
            return templates
        case "TemplateProcessing":
            let specialTokens = try reader.object(value?["special_tokens"], path + ".special_tokens")
            var prefix: [Int] = []
            var suffix: [Int] = []
            var sawSequence = false
            for (index, item) in try reader.array(value?["single"], path + ".single").enumerated() {
                let itemPath = "\(path).single[\(index)]"
                if let special = item["SpecialToken"] {
                    let name = try reader.string(special["id"], itemPath + ".SpecialToken.id")
                    guard let entry = specialTokens.first(where: { $0.key == name })?.value else {
                        throw reader.failure(itemPath, expected: "a special token listed in \(path).special_tokens", found: special["id"])
                    }
                    var ids: [Int] = []
                    for (idIndex, id) in try reader.array(entry["ids"], "\(path).special_tokens[\"\(name)\"].ids").enumerated() {
                        ids.append(try reader.int(id, "\(path).special_tokens[\"\(name)\"].ids[\(idIndex)]"))
                    }
                    if sawSequence { suffix += ids } else { prefix += ids }
                } else if let sequence = item["Sequence"] {
                    let name = try reader.string(sequence["id"], itemPath + ".Sequence.id")
                    guard name == "A", !sawSequence else {
                        throw reader.failure(itemPath, expected: "one Sequence \"A\" in the single-sequence template", found: item)
                    }
                    sawSequence = true
                } else {
                    throw reader.failure(itemPath, expected: "{\"SpecialToken\": …} or {\"Sequence\": …}", found: item)
                }
            }
            guard sawSequence else {
                throw reader.failure(path + ".single", expected: "a template containing Sequence \"A\"", found: value?["single"])
            }
            return [(prefix, suffix)]
        default:
            throw reader.failure(
                path + ".type", expected: "null, ByteLevel, TemplateProcessing or a Sequence of them (supported post-processors)",
                found: value?["type"])
        }
    }
}

// MARK: - vocab.json + merges.txt

extension TokenizerDefinition {
    /// GPT-2 files, set up like `transformers`' `GPT2TokenizerFast`: ByteLevel with the GPT-2 regex and no
    /// prefix space, ByteLevel decoder, and `<|endoftext|>` (when in the vocabulary) as the special token
    /// that is also BOS and EOS.
    static func gpt2Files(vocab vocabURL: URL, merges mergesURL: URL) throws(TokenizerError) -> TokenizerDefinition {
        let root = try JSONReader.parse(contentsOf: vocabURL)
        let reader = JSONReader(file: vocabURL.path)
        var vocabulary: [(token: String, id: Int)] = []
        for (token, value) in try reader.object(root, "(top level)") {
            vocabulary.append((token, try reader.int(value, "[\"\(token)\"]")))
        }
        let bytes = try JSONReader.readFile(mergesURL)
        let text: String
        do { text = try TextBytes.decode(bytes, source: mergesURL.path) } catch {
            throw TokenizerError(file: mergesURL.path, location: "line \(error.line ?? 1)", expected: "UTF-8 text",
                                 found: "invalid UTF-8 at byte offset \(error.byteOffset)")
        }
        var merges: [(left: String, right: String, location: String)] = []
        var lineNumber = 0
        for rawLine in text.split(separator: "\n", omittingEmptySubsequences: false) {
            lineNumber += 1
            var line = Substring(rawLine)
            if line.hasSuffix("\r") { line = line.dropLast() }
            if line.hasPrefix("#version") || line.isEmpty { continue }
            let parts = line.split(separator: " ", omittingEmptySubsequences: false)
            guard parts.count == 2 else {
                throw TokenizerError(
                    file: mergesURL.path, location: "line \(lineNumber)", expected: "\"left right\" (two tokens separated by one space)",
                    found: "\"\(line.prefix(80))\"")
            }
            merges.append((String(parts[0]), String(parts[1]), "line \(lineNumber)"))
        }
        var definition = TokenizerDefinition(
            source: vocabURL.path, vocabulary: vocabulary, merges: merges,
            preTokenizer: [.byteLevel(addPrefixSpace: false, useRegex: true)])
        if let endOfText = vocabulary.last(where: { $0.token == "<|endoftext|>" }) {
            definition.addedTokens = [AddedToken(content: endOfText.token, id: endOfText.id, special: true)]
            definition.bosToken = endOfText.token
            definition.eosToken = endOfText.token
        }
        return definition
    }
}

// MARK: - GGUF metadata

extension TokenizerDefinition {
    /// The pre-tokenizer and normalizer HF uses for a GGUF `tokenizer.ggml.pre` value, and whether the
    /// model ignores merges for whole-vocabulary words (Llama 3).
    static func ggufPre(_ pre: String?) throws(TokenizerError) -> (stages: [PreTokenizerStage], normalizers: [NormalizerStep], ignoreMerges: Bool) {
        switch pre ?? "default" {
        case "smollm":
            // SmolLM2's tokenizer.json: Sequence[Digits(individual_digits), ByteLevel(add_prefix_space: false)].
            return ([.digits(individual: true), .byteLevel(addPrefixSpace: false, useRegex: true)], [], false)
        case "gpt-2", "gpt2", "default":
            return ([.byteLevel(addPrefixSpace: false, useRegex: true)], [], false)
        case "llama-bpe", "llama3", "llama-v3":
            return ([.split(.regex(.llama3), .isolated, invert: false), .byteLevel(addPrefixSpace: false, useRegex: false)], [], true)
        case "qwen2":
            return ([.split(.regex(.qwen2), .isolated, invert: false), .byteLevel(addPrefixSpace: false, useRegex: false)], [.nfc], false)
        default:
            throw TokenizerError(
                file: "GGUF metadata", location: "tokenizer.ggml.pre",
                expected: "one of smollm, gpt-2, default, llama-bpe, qwen2", found: "\"\(pre ?? "")\"")
        }
    }
}
