import Foundation
import Testing
import Tokenizers

/// Encoding speed on English-like text (target: at least 1 MB/s on one core in release).
///
/// The text is 2 MB of sentences whose words are drawn, with a Zipf distribution over frequency rank, from
/// the ~30k lowercase whole-word tokens of the real GPT-2 vocabulary (BPE vocabularies are roughly in
/// frequency order), with capitals, digits, punctuation and newlines mixed in. A fresh tokenizer is used,
/// so the measurement includes filling the BPE word cache. Run with `swift test -c release`.
@Suite(.serialized) struct ThroughputTests {
    static func englishLikeText(bytes target: Int) throws -> String {
        let data = try Data(contentsOf: Fixtures.url("gpt2", "vocab.json"))
        let vocabulary = try #require(try JSONSerialization.jsonObject(with: data) as? [String: Int])
        let words = vocabulary.filter { token, _ in
            token.hasPrefix("Ġ") && token.count > 1 && token.dropFirst().allSatisfy { $0.isASCII && $0.isLowercase }
        }.sorted { $0.value < $1.value }.map { String($0.key.dropFirst()) }
        #expect(words.count > 15_000)
        // Zipf weights 1/(rank + 10), sampled by inverse CDF with a fixed linear congruential generator.
        var cumulative: [Double] = []
        var total = 0.0
        for rank in words.indices {
            total += 1 / Double(rank + 10)
            cumulative.append(total)
        }
        var state: UInt64 = 0x9E37_79B9_7F4A_7C15
        func next() -> Double {
            state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
            return Double(state >> 11) / Double(1 << 53)
        }
        var text = ""
        text.reserveCapacity(target + 100)
        var sentenceStart = true
        while text.utf8.count < target {
            let u = next() * total
            var low = 0
            var high = cumulative.count - 1
            while low < high {
                let middle = (low + high) / 2
                if cumulative[middle] < u { low = middle + 1 } else { high = middle }
            }
            var word = words[low]
            if sentenceStart { word = word.prefix(1).uppercased() + word.dropFirst() }
            text += sentenceStart ? word : " " + word
            sentenceStart = false
            let r = next()
            if r < 0.06 {
                text += ". "
                sentenceStart = true
                if next() < 0.1 { text += "\n\n" }
            } else if r < 0.10 {
                text += ","
            } else if r < 0.11 {
                text += " \(Int(next() * 2024))"
            } else if r < 0.115 {
                text += "'s"
            }
        }
        return text
    }

    @Test func encodeThroughputSmolLM2() throws {
        let text = try Self.englishLikeText(bytes: 2_000_000)
        let tokenizer = try Tokenizer(tokenizerJSON: Fixtures.url("smollm2", "tokenizer.json"))
        let megabytes = Double(text.utf8.count) / 1_000_000
        let clock = ContinuousClock()
        var ids: [Int] = []
        let cold = clock.measure { ids = tokenizer.encode(text) }
        let warm = clock.measure { ids = tokenizer.encode(text) }
        let coldRate = megabytes / cold.seconds
        let warmRate = megabytes / warm.seconds
        var decoded = ""
        let decodeTime = clock.measure { decoded = tokenizer.decode(ids) }
        print(
            "SmolLM2 encode: \(String(format: "%.2f", megabytes)) MB -> \(ids.count) ids; "
                + "first pass \(String(format: "%.2f", coldRate)) MB/s, second pass \(String(format: "%.2f", warmRate)) MB/s; "
                + "decode \(String(format: "%.2f", megabytes / decodeTime.seconds)) MB/s")
        #expect(decoded == text)
        #if !DEBUG
            #expect(coldRate >= 1.0, "encoding must reach 1 MB/s in release, measured \(coldRate) MB/s")
        #endif
    }

    @Test func encodeThroughputLlama3Regex() throws {
        let text = try Self.englishLikeText(bytes: 1_000_000)
        let tokenizer = try Tokenizer(tokenizerJSON: Fixtures.url("llama3-synthetic", "tokenizer.json"))
        let clock = ContinuousClock()
        var count = 0
        let time = clock.measure { count = tokenizer.encode(text).count }
        let rate = Double(text.utf8.count) / 1_000_000 / time.seconds
        print("Llama-3 regex (synthetic 1.2k vocabulary) encode: \(count) ids, \(String(format: "%.2f", rate)) MB/s")
        #if !DEBUG
            #expect(rate >= 1.0, "encoding must reach 1 MB/s in release, measured \(rate) MB/s")
        #endif
    }
}

extension Duration {
    var seconds: Double {
        let (seconds, attoseconds) = components
        return Double(seconds) + Double(attoseconds) / 1e18
    }
}
