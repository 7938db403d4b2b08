import Foundation

/// A byte-level BPE tokenizer that gives the same ids as HF `tokenizers` (GPT-2, SmolLM2, Llama 3, Qwen2).
///
/// Encoding follows HF's pipeline step by step:
/// 1. added tokens that are not `normalized` (all special tokens, usually) are found in the raw text,
///    leftmost-longest, with their `single_word`/`lstrip`/`rstrip` options;
/// 2. the text between them is normalized (NFC/NFD/NFKC/NFKD), then `normalized` added tokens are found;
/// 3. the remaining text is pre-tokenized (`Split` with the GPT-2 / Llama-3 / Qwen2 regexes or a literal,
///    `Digits`, `ByteLevel`), each pre-token is encoded by the BPE model (`BytePairModel`);
/// 4. with `addSpecialTokens`, the post-processor's template adds its tokens (e.g. Llama 3's BOS).
///
/// Immutable after loading and safe to share between threads (the BPE word cache is behind a mutex).
/// Loading refuses, with a `TokenizerError`, any component whose behaviour is not implemented here.
public final class Tokenizer: Sendable {
    private let model: BytePairModel
    private let pipeline: PreTokenizerPipeline
    private let normalizers: [NormalizerStep]
    private let rawMatcher: AddedTokenMatcher
    private let normalizedMatcher: AddedTokenMatcher
    private let templates: [(prefix: [Int], suffix: [Int])]

    /// Token string for every id (nil in gaps); added tokens take precedence over the model's.
    private let tokenStrings: [String?]
    /// UTF-8 of each token string → id (added tokens first, then the model vocabulary).
    private let idsByToken: [[UInt8]: Int]
    /// What the ByteLevel decoder produces for each id: `decodedBytes[decodedOffsets[id]..<decodedOffsets[id + 1]]`.
    private let decodedBytes: [UInt8]
    private let decodedOffsets: [Int]
    private let isSpecialID: [Bool]

    /// The added tokens, in id order.
    public let addedTokens: [AddedToken]
    public let bosTokenID: Int?
    public let eosTokenID: Int?

    /// The number of ids: one more than the highest id of the vocabulary and the added tokens
    /// (HF `get_vocab_size(with_added_tokens=True)` for vocabularies without gaps).
    public var vocabularySize: Int { tokenStrings.count }

    /// Added tokens marked special, by content.
    public var specialTokens: [String: Int] {
        var result: [String: Int] = [:]
        for token in addedTokens where token.special { result[token.content] = token.id }
        return result
    }

    // MARK: - Loading

    /// Loads an HF `tokenizer.json` (BPE model, byte-level). BOS and EOS come from a `tokenizer_config.json`
    /// in the same folder when there is one, else BOS is the post-processor template's leading token.
    public convenience init(tokenizerJSON url: URL) throws(TokenizerError) {
        let config = url.deletingLastPathComponent().appendingPathComponent("tokenizer_config.json")
        try self.init(tokenizerJSON: url, tokenizerConfigJSON: FileManager.default.fileExists(atPath: config.path) ? config : nil)
    }

    /// Loads an HF `tokenizer.json`, taking `bos_token`/`eos_token` from `tokenizerConfigJSON` when given.
    public convenience init(tokenizerJSON url: URL, tokenizerConfigJSON: URL?) throws(TokenizerError) {
        try self.init(definition: TokenizerDefinition.tokenizerJSON(url, config: tokenizerConfigJSON))
    }

    /// Loads an HF `tokenizer.json` from bytes already read (`url` names it in errors), taking
    /// `bos_token`/`eos_token` from `tokenizerConfigJSON`'s bytes when given: a model's files are read once.
    public convenience init(tokenizerJSON data: Data, url: URL, tokenizerConfigJSON: (data: Data, url: URL)?) throws(TokenizerError) {
        try self.init(definition: TokenizerDefinition.tokenizerJSON(
            [UInt8](data), url: url, config: tokenizerConfigJSON.map { ([UInt8]($0.data), $0.url) }))
    }

    /// Loads GPT-2 style `vocab.json` + `merges.txt`, set up like `transformers`' `GPT2TokenizerFast`
    /// (`<|endoftext|>` is the special token, BOS and EOS).
    public convenience init(vocabJSON: URL, mergesTXT: URL) throws(TokenizerError) {
        try self.init(definition: TokenizerDefinition.gpt2Files(vocab: vocabJSON, merges: mergesTXT))
    }

    /// Builds the tokenizer from GGUF metadata (`tokenizer.ggml.model == "gpt2"`).
    ///
    /// - Parameters:
    ///   - ggufTokens: `tokenizer.ggml.tokens`; the index is the id.
    ///   - merges: `tokenizer.ggml.merges`, `"left right"` strings in rank order.
    ///   - tokenTypes: `tokenizer.ggml.token_type`: 3 (control) becomes a special added token, 4
    ///     (user-defined) a non-special added token; other types are plain vocabulary.
    ///   - pre: `tokenizer.ggml.pre`: `smollm`, `gpt-2`/`default`, `llama-bpe` (Llama 3, with
    ///     `ignore_merges`), `qwen2` (with NFC, like Qwen2's tokenizer.json). Others throw.
    ///   - addBOSToken: `tokenizer.ggml.add_bos_token`: whether `encode(_:addSpecialTokens: true)` prepends BOS.
    public convenience init(
        ggufTokens: [String], merges: [String], tokenTypes: [Int], pre: String?, bosTokenID: Int?, eosTokenID: Int?,
        addBOSToken: Bool = false
    ) throws(TokenizerError) {
        let source = "GGUF metadata"
        guard tokenTypes.isEmpty || tokenTypes.count == ggufTokens.count else {
            throw TokenizerError(
                file: source, location: "tokenizer.ggml.token_type", expected: "\(ggufTokens.count) entries (one per token)",
                found: "\(tokenTypes.count)")
        }
        let (stages, normalizers, ignoreMerges) = try TokenizerDefinition.ggufPre(pre)
        var mergePairs: [(left: String, right: String, location: String)] = []
        mergePairs.reserveCapacity(merges.count)
        for (index, merge) in merges.enumerated() {
            let parts = merge.split(separator: " ", omittingEmptySubsequences: false)
            guard parts.count == 2 else {
                throw TokenizerError(
                    file: source, location: "tokenizer.ggml.merges[\(index)]", expected: "\"left right\"", found: "\"\(merge)\"")
            }
            mergePairs.append((String(parts[0]), String(parts[1]), "tokenizer.ggml.merges[\(index)]"))
        }
        var definition = TokenizerDefinition(
            source: source, vocabulary: ggufTokens.enumerated().map { ($0.element, $0.offset) }, merges: mergePairs,
            preTokenizer: stages)
        definition.normalizers = normalizers
        definition.ignoreMerges = ignoreMerges
        // A token listed twice keeps its last id (llama.cpp and HF's conversion do the same).
        var lastID: [String: Int] = [:]
        for (id, token) in ggufTokens.enumerated() where tokenTypes.indices.contains(id) && (tokenTypes[id] == 3 || tokenTypes[id] == 4) {
            lastID[token] = id
        }
        for (id, type) in tokenTypes.enumerated() where (type == 3 || type == 4) && lastID[ggufTokens[id]] == id {
            definition.addedTokens.append(AddedToken(content: ggufTokens[id], id: id, special: type == 3))
        }
        for (name, id) in [("tokenizer.ggml.bos_token_id", bosTokenID), ("tokenizer.ggml.eos_token_id", eosTokenID)] {
            if let id, !ggufTokens.indices.contains(id) {
                throw TokenizerError(file: source, location: name, expected: "an id below \(ggufTokens.count)", found: "\(id)")
            }
        }
        definition.bosToken = bosTokenID.map { ggufTokens[$0] }
        definition.eosToken = eosTokenID.map { ggufTokens[$0] }
        if addBOSToken, let bosTokenID { definition.templates = [([bosTokenID], [])] }
        try self.init(definition: definition)
    }

    init(definition: TokenizerDefinition) throws(TokenizerError) {
        let source = definition.source
        func failure(_ location: String, _ expected: String, _ found: String) -> TokenizerError {
            TokenizerError(file: source, location: location, expected: expected, found: found)
        }

        // Model vocabulary (a repeated token keeps its last id, like a Python dict / serde map).
        var modelIDs: [[UInt8]: Int32] = [:]
        modelIDs.reserveCapacity(definition.vocabulary.count)
        var highestID = -1
        for (token, id) in definition.vocabulary {
            modelIDs[Array(token.utf8)] = Int32(id)
            highestID = max(highestID, id)
        }
        let modelVocabularyCount = modelIDs.count

        var idForByte = [Int32](repeating: -1, count: 256)
        for byte in 0..<256 { idForByte[byte] = modelIDs[ByteLevelAlphabet.utf8ForByte[byte]] ?? -1 }
        if !idForByte.contains(where: { $0 >= 0 }) {
            throw failure("model.vocab", "a byte-level vocabulary (tokens such as \"Ġ\" for the space byte)", "none of the 256 byte-level characters")
        }

        var mergeTable: [UInt64: UInt64] = [:]
        mergeTable.reserveCapacity(definition.merges.count)
        for (rank, merge) in definition.merges.enumerated() {
            guard let left = modelIDs[Array(merge.left.utf8)] else {
                throw failure(merge.location, "a merge of two vocabulary tokens", "\"\(merge.left)\" is not in the vocabulary")
            }
            guard let right = modelIDs[Array(merge.right.utf8)] else {
                throw failure(merge.location, "a merge of two vocabulary tokens", "\"\(merge.right)\" is not in the vocabulary")
            }
            guard let merged = modelIDs[Array((merge.left + merge.right).utf8)] else {
                throw failure(merge.location, "a merge whose result is in the vocabulary", "\"\(merge.left + merge.right)\" is not in the vocabulary")
            }
            mergeTable[BytePairModel.pairKey(left, right)] = UInt64(rank) << 32 | UInt64(UInt32(merged))
        }

        var unknownID: Int32?
        if let unknownToken = definition.unknownToken {
            guard let id = modelIDs[Array(unknownToken.utf8)] else {
                throw failure("model.unk_token", "a token of the vocabulary", "\"\(unknownToken)\"")
            }
            unknownID = id
        }

        var wholeWordIDs: [[UInt8]: Int32]?
        if definition.ignoreMerges {
            var table: [[UInt8]: Int32] = [:]
            for (token, id) in modelIDs {
                guard let string = String(validating: token, as: UTF8.self), let raw = ByteLevelAlphabet.bytes(ofToken: string) else { continue }
                table[raw] = id
            }
            wholeWordIDs = table
        }
        model = BytePairModel(
            idForByte: idForByte, merges: mergeTable, wholeWordIDs: wholeWordIDs, unknownID: unknownID,
            fuseUnknown: definition.fuseUnknown)
        pipeline = PreTokenizerPipeline(stages: definition.preTokenizer)
        normalizers = definition.normalizers

        // Added tokens get their ids as HF's AddedVocabulary assigns them; a file whose ids disagree is refused.
        var addedByContent: [[UInt8]: Int] = [:]
        var added: [AddedToken] = []
        for (index, var token) in definition.addedTokens.enumerated() {
            let content = Array(token.content.utf8)
            if content.isEmpty { continue }
            let assigned: Int
            if let existing = addedByContent[content] {
                assigned = existing
            } else if let id = modelIDs[content] {
                assigned = Int(id)
            } else if let highest = addedByContent.values.max() {
                assigned = highest >= modelVocabularyCount || modelVocabularyCount == 0 ? highest + 1 : modelVocabularyCount
            } else {
                assigned = modelVocabularyCount
            }
            if assigned != token.id {
                throw failure(
                    "added_tokens[\(index)] (\"\(token.content)\")", "id \(assigned) (as HF tokenizers assigns it)", "id \(token.id)")
            }
            token.id = assigned
            if let previous = added.firstIndex(where: { $0.id == assigned }) {
                added[previous] = token
            } else {
                added.append(token)
            }
            addedByContent[content] = assigned
            highestID = max(highestID, assigned)
        }
        added.sort { $0.id < $1.id }
        addedTokens = added
        rawMatcher = AddedTokenMatcher(added.filter { !$0.normalized }.map { ($0, Array($0.content.utf8)) })
        normalizedMatcher = AddedTokenMatcher(
            added.filter(\.normalized).map { token in
                let bytes = Array(token.content.utf8)
                return (token, bytes.withUnsafeBufferPointer { NormalizerStep.apply(definition.normalizers, to: $0) })
            })

        // Id tables.
        var strings = [String?](repeating: nil, count: highestID + 1)
        for (token, id) in definition.vocabulary { strings[id] = token }
        var special = [Bool](repeating: false, count: highestID + 1)
        for token in added {
            strings[token.id] = token.content
            special[token.id] = token.special
        }
        tokenStrings = strings
        isSpecialID = special
        var lookup: [[UInt8]: Int] = [:]
        lookup.reserveCapacity(modelIDs.count + added.count)
        for (token, id) in modelIDs { lookup[token] = Int(id) }
        for token in added { lookup[Array(token.content.utf8)] = token.id }
        idsByToken = lookup

        var bytes: [UInt8] = []
        var offsets: [Int] = [0]
        offsets.reserveCapacity(strings.count + 1)
        for string in strings {
            if let string { bytes += ByteLevelAlphabet.bytes(ofToken: string) ?? Array(string.utf8) }
            offsets.append(bytes.count)
        }
        decodedBytes = bytes
        decodedOffsets = offsets

        for (prefix, suffix) in definition.templates {
            for id in prefix + suffix where id < 0 || id > highestID || strings[id] == nil {
                throw failure("post_processor", "template token ids in the vocabulary", "id \(id)")
            }
        }
        templates = definition.templates

        func resolve(_ name: String?, _ key: String) throws(TokenizerError) -> Int? {
            guard let name else { return nil }
            guard let id = lookup[Array(name.utf8)] else { throw failure(key, "a token of the vocabulary", "\"\(name)\"") }
            return id
        }
        bosTokenID = try resolve(definition.bosToken, "bos_token") ?? definition.templates.first?.prefix.first
        eosTokenID = try resolve(definition.eosToken, "eos_token")
    }

    // MARK: - Encoding

    /// The token ids of `text`, equal to HF `tokenizer.encode(text, add_special_tokens=…).ids`.
    ///
    /// Special tokens written in the text (e.g. `<|im_end|>`) are recognised and become their ids.
    /// With `addSpecialTokens`, the post-processor's template tokens are added (e.g. Llama 3's
    /// `<|begin_of_text|>`; SmolLM2 and GPT-2 add none).
    public func encode(_ text: String, addSpecialTokens: Bool = false) -> [Int] {
        var output: [Int] = []
        output.reserveCapacity(text.utf8.count / 3 + 4)
        var text = text
        text.withUTF8 { utf8 in
            if rawMatcher.isEmpty {
                encodeBetweenAddedTokens(utf8, into: &output)
                return
            }
            for segment in rawMatcher.split(utf8) {
                switch segment {
                case .token(let id): output.append(id)
                case .text(let range): encodeBetweenAddedTokens(UnsafeBufferPointer(rebasing: utf8[range]), into: &output)
                }
            }
        }
        if addSpecialTokens {
            for (prefix, suffix) in templates { output = prefix + output + suffix }
        }
        return output
    }

    /// Normalizes raw text between non-normalized added tokens, then splits out the normalized ones.
    private func encodeBetweenAddedTokens(_ text: UnsafeBufferPointer<UInt8>, into output: inout [Int]) {
        if text.isEmpty { return }
        if normalizers.isEmpty {
            encodeNormalized(text, into: &output)
        } else {
            let normalized = NormalizerStep.apply(normalizers, to: text)
            normalized.withUnsafeBufferPointer { encodeNormalized($0, into: &output) }
        }
    }

    private func encodeNormalized(_ text: UnsafeBufferPointer<UInt8>, into output: inout [Int]) {
        if normalizedMatcher.isEmpty {
            encodeWords(text, into: &output)
            return
        }
        for segment in normalizedMatcher.split(text) {
            switch segment {
            case .token(let id): output.append(id)
            case .text(let range): encodeWords(UnsafeBufferPointer(rebasing: text[range]), into: &output)
            }
        }
    }

    private func encodeWords(_ text: UnsafeBufferPointer<UInt8>, into output: inout [Int]) {
        pipeline.run(text) { word in model.encode(word, into: &output) }
    }

    // MARK: - Decoding

    /// The text of `ids`, equal to HF `tokenizer.decode(ids, skip_special_tokens=…)` with the ByteLevel
    /// decoder: the bytes of all tokens are joined, and invalid UTF-8 becomes U+FFFD. Unknown ids are
    /// skipped, as HF does.
    public func decode(_ ids: [Int], skipSpecialTokens: Bool = false) -> String {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(ids.count * 4)
        let count = tokenStrings.count
        decodedBytes.withUnsafeBufferPointer { table in
            decodedOffsets.withUnsafeBufferPointer { offsets in
                for id in ids where id >= 0 && id < count {
                    if skipSpecialTokens && isSpecialID[id] { continue }
                    if tokenStrings[id] == nil { continue }
                    bytes.append(contentsOf: UnsafeBufferPointer(rebasing: table[offsets[id]..<offsets[id + 1]]))
                }
            }
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    // MARK: - Vocabulary

    /// The id of an exact token string (byte-level form for model tokens, e.g. `"Ġthe"`; content for added
    /// tokens, e.g. `"<|im_end|>"`), or nil.
    public func id(of token: String) -> Int? {
        idsByToken[Array(token.utf8)]
    }

    /// The token string of an id (byte-level form, or the added token's content), or nil.
    public func token(of id: Int) -> String? {
        guard id >= 0, id < tokenStrings.count else { return nil }
        return tokenStrings[id]
    }
}
