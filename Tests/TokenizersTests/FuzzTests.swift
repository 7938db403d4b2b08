import Foundation
import Testing
import Tokenizers

/// Damaged tokenizer definitions end in a `TokenizerError` or a working tokenizer, never a trap: seeded
/// variants of the synthetic tokenizer.json files (byte damage, and values swapped for others of another
/// type or range) and of GGUF-style token/merge/type arrays. A tokenizer that loads must encode and decode.
@Suite struct TokenizerFuzzTests {
    struct Random {
        var state: UInt64
        mutating func next() -> UInt64 {
            state &+= 0x9E37_79B9_7F4A_7C15
            var z = state
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return z ^ (z >> 31)
        }
        mutating func below(_ bound: Int) -> Int { Int(next() % UInt64(max(bound, 1))) }
    }

    static let sample = "Hello wörld 123 <|im_start|> \u{FEFF}\r\n🙂 ok"

    /// Loads (or refuses) a tokenizer and exercises it.
    static func exercise(_ load: () throws(TokenizerError) -> Tokenizer) -> Bool {
        do {
            let tokenizer = try load()
            let ids = tokenizer.encode(sample, addSpecialTokens: true)
            _ = tokenizer.decode(ids)
            _ = tokenizer.decode(Array(0..<min(tokenizer.vocabularySize, 300)), skipSpecialTokens: true)
            return true
        } catch {
            #expect(!error.file.isEmpty)
            return false
        }
    }

    /// A JSON value of another kind or an extreme number, to put where something else was.
    static func replacement(_ random: inout Random) -> Any {
        let choices: [Any] = [NSNull(), -1, 0, 1, 2_147_483_648, 1e300, -0.5, "", "Ġ", "<|im_start|>", [Any](), [String: Any](), true,
                              ["type": "BPE"], ["Ġ", "t"], [1, 2]]
        return choices[random.below(choices.count)]
    }

    /// Replaces a random value somewhere in the JSON tree.
    static func damage(_ value: Any, _ random: inout Random, depth: Int = 0) -> Any {
        if depth > 0, random.below(4) == 0 { return replacement(&random) }
        if var object = value as? [String: Any], !object.isEmpty {
            let key = object.keys.sorted()[random.below(object.count)]
            object[key] = random.below(8) == 0 ? nil : damage(object[key]!, &random, depth: depth + 1)
            return object
        }
        if var array = value as? [Any], !array.isEmpty {
            let index = random.below(array.count)
            array[index] = damage(array[index], &random, depth: depth + 1)
            return array
        }
        return replacement(&random)
    }

    @Test(arguments: ["llama3-synthetic", "qwen2-synthetic", "variety-synthetic"])
    func damagedTokenizerJSON(_ name: String) throws {
        let original = try Data(contentsOf: Fixtures.url(name, "tokenizer.json"))
        let root = try JSONSerialization.jsonObject(with: original)
        let folder = try LoadingErrorTests.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: folder) }
        let url = folder.appendingPathComponent("tokenizer.json")
        var loaded = 0
        for seed in 0..<100 as Range<UInt64> {
            var random = Random(state: seed &* 0x9E37_79B9 &+ UInt64(name.utf8.count))
            var bytes: [UInt8]
            if seed % 3 == 0 {
                bytes = [UInt8](original)
                for _ in 0...random.below(6) { bytes[random.below(bytes.count)] = UInt8(truncatingIfNeeded: random.next()) }
            } else {
                var damaged: Any = root
                for _ in 0...random.below(3) { damaged = Self.damage(damaged, &random) }
                bytes = [UInt8](try JSONSerialization.data(withJSONObject: damaged))
            }
            try Data(bytes).write(to: url)
            let started = Date()
            if Self.exercise({ () throws(TokenizerError) in try Tokenizer(tokenizerJSON: url, tokenizerConfigJSON: nil) }) { loaded += 1 }
            #expect(Date().timeIntervalSince(started) < 5, "seed \(seed) of \(name)")
        }
        #expect(loaded < 100, "some variants must be refused")
    }

    @Test func damagedGGUFArrays() throws {
        let tokenizer = try Fixtures.tokenizer("llama3-synthetic")
        let tokens = (0..<tokenizer.vocabularySize).compactMap { tokenizer.token(of: $0) }
        let json = try JSONSerialization.jsonObject(with: Data(contentsOf: Fixtures.url("llama3-synthetic", "tokenizer.json")))
        let pairs = ((json as? [String: Any])?["model"] as? [String: Any])?["merges"] as? [Any] ?? []
        let merges = pairs.compactMap { ($0 as? [String])?.joined(separator: " ") ?? $0 as? String }
        for seed in 0..<200 as Range<UInt64> {
            var random = Random(state: seed)
            var t = tokens, m = merges, types = [Int](repeating: 1, count: tokens.count)
            var bos: Int? = 0, eos: Int? = 1
            for _ in 0...random.below(6) {
                switch random.below(8) {
                case 0: if !t.isEmpty { t[random.below(t.count)] = ["", " ", "Ġ", "<|x|>", "\u{FEFF}", t[random.below(t.count)]][random.below(6)] }
                case 1: if !m.isEmpty { m[random.below(m.count)] = ["", " ", "a", "a b c", "Ġ Ġ", "zz yy"][random.below(6)] }
                case 2: types[random.below(types.count)] = [-1, 0, 2, 3, 4, 5, 6, Int(Int32.max)][random.below(8)]
                case 3: bos = [nil, -1, 0, t.count, Int.max][random.below(5)]
                case 4: eos = [nil, -1, 1, t.count, Int.min][random.below(5)]
                case 5: t.removeLast(random.below(t.count))
                case 6: m.shuffle(using: &random)
                default: types = Array(types.prefix(random.below(types.count + 1)))
                }
            }
            _ = Self.exercise { () throws(TokenizerError) in
                try Tokenizer(ggufTokens: t, merges: m, tokenTypes: types, pre: ["llama-bpe", "smollm", "qwen2", "gpt2"][random.below(4)],
                              bosTokenID: bos, eosTokenID: eos, addBOSToken: random.below(2) == 0)
            }
        }
    }
}

extension TokenizerFuzzTests.Random: RandomNumberGenerator {}
