import Foundation
import Testing
import Tokenizers

/// `Tokenizer(ggufTokens:…)` on SmolLM2's GGUF metadata gives the same ids as its tokenizer.json.
///
/// The GGUF arrays are rebuilt from the committed tokenizer.json (vocabulary by id, merges as "a b",
/// token types from `gguf_metadata.json`), and their FNV-1a-64 digests are checked against the digests
/// the generator computed from the real GGUF's `tokenizer.ggml.tokens/merges/token_type`, so the test
/// runs on exactly the GGUF's metadata without committing a second copy of it.
@Suite struct GGUFMetadataTests {
    struct Metadata: Decodable {
        var pre: String
        var bosTokenID: Int
        var eosTokenID: Int
        var tokenCount: Int
        var mergeCount: Int
        var tokensDigest: String
        var mergesDigest: String
        var tokenTypesDigest: String
        var nonNormalTokenTypes: [String: Int]

        enum CodingKeys: String, CodingKey {
            case pre = "tokenizer.ggml.pre"
            case bosTokenID = "tokenizer.ggml.bos_token_id"
            case eosTokenID = "tokenizer.ggml.eos_token_id"
            case tokenCount = "token_count"
            case mergeCount = "merge_count"
            case tokensDigest = "tokens_fnv1a64"
            case mergesDigest = "merges_fnv1a64"
            case tokenTypesDigest = "token_types_fnv1a64"
            case nonNormalTokenTypes = "non_normal_token_types"
        }
    }

    /// FNV-1a 64 over the UTF-8 of each string followed by a newline byte (as in the generator).
    static func fnv1a64(_ strings: [String]) -> String {
        var hash: UInt64 = 0xCBF2_9CE4_8422_2325
        for string in strings {
            for byte in string.utf8 {
                hash = (hash ^ UInt64(byte)) &* 0x0000_0100_0000_01B3
            }
            hash = (hash ^ 0x0A) &* 0x0000_0100_0000_01B3
        }
        let hex = String(hash, radix: 16)
        return String(repeating: "0", count: 16 - hex.count) + hex
    }

    struct GGUFArrays {
        var metadata: Metadata
        var tokens: [String]
        var merges: [String]
        var tokenTypes: [Int]
    }

    static func smolLM2Arrays() throws -> GGUFArrays {
        let metadata = try JSONDecoder().decode(
            Metadata.self, from: Data(contentsOf: Fixtures.url("smollm2", "gguf_metadata.json")))
        let tokenizer = try Fixtures.tokenizer("smollm2")
        let tokens = try (0..<tokenizer.vocabularySize).map { id in try #require(tokenizer.token(of: id)) }
        let json = try JSONSerialization.jsonObject(with: Data(contentsOf: Fixtures.url("smollm2", "tokenizer.json")))
        let model = try #require((json as? [String: Any])?["model"] as? [String: Any])
        let pairs = try #require(model["merges"] as? [[String]])
        let merges = pairs.map { $0.joined(separator: " ") }
        let tokenTypes = tokens.indices.map { metadata.nonNormalTokenTypes[String($0)] ?? 1 }
        return GGUFArrays(metadata: metadata, tokens: tokens, merges: merges, tokenTypes: tokenTypes)
    }

    @Test func rebuiltArraysAreTheGGUFs() throws {
        let arrays = try Self.smolLM2Arrays()
        #expect(arrays.tokens.count == arrays.metadata.tokenCount)
        #expect(arrays.merges.count == arrays.metadata.mergeCount)
        #expect(Self.fnv1a64(arrays.tokens) == arrays.metadata.tokensDigest)
        #expect(Self.fnv1a64(arrays.merges) == arrays.metadata.mergesDigest)
        #expect(Self.fnv1a64(arrays.tokenTypes.map(String.init)) == arrays.metadata.tokenTypesDigest)
    }

    @Test func ggufInitEqualsTokenizerJSON() throws {
        let arrays = try Self.smolLM2Arrays()
        let fromGGUF = try Tokenizer(
            ggufTokens: arrays.tokens, merges: arrays.merges, tokenTypes: arrays.tokenTypes, pre: arrays.metadata.pre,
            bosTokenID: arrays.metadata.bosTokenID, eosTokenID: arrays.metadata.eosTokenID)
        let fromJSON = try Fixtures.tokenizer("smollm2")
        #expect(fromGGUF.vocabularySize == fromJSON.vocabularySize)
        #expect(fromGGUF.specialTokens == fromJSON.specialTokens)
        #expect(fromGGUF.bosTokenID == 1)
        #expect(fromGGUF.eosTokenID == 2)
        for (index, golden) in try Fixtures.goldens("smollm2").encode.enumerated() {
            if let difference = firstDifference(expected: golden.ids, found: fromGGUF.encode(golden.text)) {
                Issue.record(Comment(rawValue: "GGUF init, case \(index) \(describe(golden.text)): \(difference)"))
            }
            let decoded = fromGGUF.decode(golden.ids)
            #expect(decoded == fromJSON.decode(golden.ids), "case \(index)")
        }
    }

    @Test func ggufAddBOSToken() throws {
        let arrays = try Self.smolLM2Arrays()
        let tokenizer = try Tokenizer(
            ggufTokens: arrays.tokens, merges: arrays.merges, tokenTypes: arrays.tokenTypes, pre: "smollm",
            bosTokenID: 1, eosTokenID: 2, addBOSToken: true)
        #expect(tokenizer.encode("hi", addSpecialTokens: true) == [1] + tokenizer.encode("hi"))
    }

    @Test func unknownPreIsRefused() throws {
        let arrays = try Self.smolLM2Arrays()
        let error = #expect(throws: TokenizerError.self) {
            try Tokenizer(
                ggufTokens: arrays.tokens, merges: arrays.merges, tokenTypes: arrays.tokenTypes, pre: "deepseek-coder",
                bosTokenID: 1, eosTokenID: 2)
        }
        #expect(error?.location == "tokenizer.ggml.pre")
        #expect(error?.found.contains("deepseek-coder") == true)
    }

    @Test func repeatedControlTokenKeepsLastID() throws {
        let arrays = try Self.smolLM2Arrays()
        var tokens = arrays.tokens
        var types = arrays.tokenTypes
        tokens.append("<|im_end|>")  // a second copy at id 49152, as some converted GGUFs have
        types.append(3)
        let tokenizer = try Tokenizer(
            ggufTokens: tokens, merges: arrays.merges, tokenTypes: types, pre: "smollm", bosTokenID: 1, eosTokenID: 2)
        #expect(tokenizer.id(of: "<|im_end|>") == 49152)
        #expect(tokenizer.encode("a<|im_end|>") == [tokenizer.encode("a")[0], 49152])
        #expect(tokenizer.token(of: 2) == "<|im_end|>")
    }

    @Test func mismatchedTokenTypesAreRefused() throws {
        let error = #expect(throws: TokenizerError.self) {
            try Tokenizer(ggufTokens: ["a", "b"], merges: [], tokenTypes: [1], pre: "gpt-2", bosTokenID: nil, eosTokenID: nil)
        }
        #expect(error?.location == "tokenizer.ggml.token_type")
    }
}
