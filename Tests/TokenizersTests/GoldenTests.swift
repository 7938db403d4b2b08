import Foundation
import Testing
import Tokenizers

/// Ids and decoded text equal HF `tokenizers` (goldens from tools/generate_tokenizer_fixtures.py).
@Suite struct GoldenTests {
    @Test(arguments: Fixtures.names)
    func encodeEqualsHF(name: String) throws {
        let tokenizer = try Fixtures.tokenizer(name)
        let goldens = try Fixtures.goldens(name)
        #expect(goldens.encode.count >= 50)
        for (index, golden) in goldens.encode.enumerated() {
            let ids = tokenizer.encode(golden.text)
            if let difference = firstDifference(expected: golden.ids, found: ids) {
                Issue.record(Comment(rawValue: "\(name) case \(index) \(describe(golden.text)): \(difference)"))
            }
            let withSpecial = tokenizer.encode(golden.text, addSpecialTokens: true)
            if let difference = firstDifference(expected: golden.ids_with_special_tokens, found: withSpecial) {
                Issue.record(Comment(rawValue: "\(name) case \(index) with special tokens \(describe(golden.text)): \(difference)"))
            }
        }
    }

    @Test(arguments: Fixtures.names)
    func fuzzEncodeEqualsHF(name: String) throws {
        let tokenizer = try Fixtures.tokenizer(name)
        let goldens = try Fixtures.goldens(name)
        #expect(goldens.fuzz.count == 400)
        var failures = 0
        for (index, golden) in goldens.fuzz.enumerated() {
            let found = tokenizer.encode(golden.text, addSpecialTokens: true)
            if let difference = firstDifference(expected: golden.ids_with_special_tokens, found: found) {
                failures += 1
                if failures <= 10 { Issue.record(Comment(rawValue: "\(name) fuzz case \(index) \(describe(golden.text)): \(difference)")) }
            }
        }
        #expect(failures == 0, "\(failures) of \(goldens.fuzz.count) fuzz cases differ from HF")
    }

    @Test(arguments: Fixtures.names)
    func decodeEqualsHF(name: String) throws {
        let tokenizer = try Fixtures.tokenizer(name)
        let goldens = try Fixtures.goldens(name)
        for (index, golden) in goldens.decode.enumerated() {
            let text = tokenizer.decode(golden.ids, skipSpecialTokens: golden.skip_special_tokens)
            if Array(text.utf8) != Array(golden.text.utf8) {
                let message =
                    "\(name) decode case \(index) ids \(golden.ids.prefix(16)) skip=\(golden.skip_special_tokens): "
                    + "expected \(describe(golden.text)), found \(describe(text))"
                Issue.record(Comment(rawValue: message))
            }
        }
    }

    @Test(arguments: Fixtures.names)
    func vocabularySizeEqualsHF(name: String) throws {
        #expect(try Fixtures.tokenizer(name).vocabularySize == Fixtures.goldens(name).vocabulary_size)
    }

    /// Without a normalizer or stripping added tokens, decoding gives back the exact text (special tokens
    /// in the text come back as their content).
    @Test(arguments: ["smollm2", "gpt2", "llama3-synthetic"])
    func decodeInvertsEncode(name: String) throws {
        let tokenizer = try Fixtures.tokenizer(name)
        for (index, golden) in try Fixtures.goldens(name).encode.enumerated() {
            // llama3-synthetic's <mask> (lstrip) and <tool> (rstrip) consume whitespace by design.
            if name == "llama3-synthetic", golden.text.contains("<mask>") || golden.text.contains("<tool>") { continue }
            let decoded = tokenizer.decode(tokenizer.encode(golden.text))
            #expect(
                Array(decoded.utf8) == Array(golden.text.utf8),
                "\(name) case \(index): expected \(describe(golden.text)), found \(describe(decoded))")
        }
    }

    /// With the NFC normalizer, decoding gives back the NFC form of the text. (Foundation's NFC is the
    /// reference here, so texts with scalars newer than HF's Unicode 9.0 tables are left to the goldens.)
    @Test func decodeInvertsEncodeUpToNFC() throws {
        let tokenizer = try Fixtures.tokenizer("qwen2-synthetic")
        for (index, golden) in try Fixtures.goldens("qwen2-synthetic").encode.enumerated() where !golden.text.contains("façade") {
            if golden.text.unicodeScalars.contains(where: { ($0.properties.age?.major ?? 0) >= 10 }) { continue }
            let expected = golden.text.precomposedStringWithCanonicalMapping
            let decoded = tokenizer.decode(tokenizer.encode(golden.text))
            #expect(
                Array(decoded.utf8) == Array(expected.utf8),
                "case \(index): expected \(describe(expected)), found \(describe(decoded))")
        }
    }
}

/// The vocabulary API on the real SmolLM2 and GPT-2 vocabularies.
@Suite struct VocabularyTests {
    @Test func smolLM2SpecialTokens() throws {
        let tokenizer = try Fixtures.tokenizer("smollm2")
        #expect(tokenizer.vocabularySize == 49152)
        #expect(tokenizer.id(of: "<|im_start|>") == 1)
        #expect(tokenizer.id(of: "<|im_end|>") == 2)
        #expect(tokenizer.id(of: "<|endoftext|>") == 0)
        #expect(tokenizer.token(of: 2) == "<|im_end|>")
        #expect(tokenizer.bosTokenID == 1)
        #expect(tokenizer.eosTokenID == 2)
        #expect(tokenizer.specialTokens.count == 17)
        #expect(tokenizer.specialTokens["<empty_output>"] == 16)
        #expect(tokenizer.id(of: "Ġthe") != nil)
        #expect(tokenizer.token(of: tokenizer.id(of: "Ġthe") ?? -1) == "Ġthe")
        #expect(tokenizer.id(of: "not a token at all") == nil)
        #expect(tokenizer.token(of: 49152) == nil)
        #expect(tokenizer.token(of: -1) == nil)
        // The chat format the lead builds on: every marker is one id.
        let ids = tokenizer.encode("<|im_start|>user\nhi<|im_end|>\n")
        #expect(ids == [1, 4093, 198, 6004, 2, 198])  // HF tokenizers 0.23.3
        #expect(tokenizer.decode(ids, skipSpecialTokens: true) == "user\nhi\n")
    }

    @Test func gpt2EndOfText() throws {
        let tokenizer = try Fixtures.tokenizer("gpt2")
        #expect(tokenizer.vocabularySize == 50257)
        #expect(tokenizer.id(of: "<|endoftext|>") == 50256)
        #expect(tokenizer.bosTokenID == 50256)
        #expect(tokenizer.eosTokenID == 50256)
        #expect(tokenizer.specialTokens == ["<|endoftext|>": 50256])
        #expect(tokenizer.encode("Hello world") == [15496, 995])
    }

    @Test func llama3TemplateAddsBOS() throws {
        let tokenizer = try Fixtures.tokenizer("llama3-synthetic")
        let bos = try #require(tokenizer.id(of: "<|begin_of_text|>"))
        #expect(tokenizer.bosTokenID == bos)
        #expect(tokenizer.encode("hi", addSpecialTokens: true) == [bos] + tokenizer.encode("hi"))
    }

    @Test func concurrentEncodingMatchesSerial() async throws {
        let tokenizer = try Fixtures.tokenizer("smollm2")
        let texts = try Fixtures.goldens("smollm2").encode.map(\.text)
        let serial = texts.map { tokenizer.encode($0) }
        let parallel = await withTaskGroup(of: (Int, [Int]).self) { group in
            for (index, text) in texts.enumerated() { group.addTask { (index, tokenizer.encode(text)) } }
            var result = [[Int]](repeating: [], count: texts.count)
            for await (index, ids) in group { result[index] = ids }
            return result
        }
        #expect(serial == parallel)
    }
}
