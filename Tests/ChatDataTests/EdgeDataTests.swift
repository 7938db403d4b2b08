import Foundation
import ModelIO
import Testing
import Tokenizers
import Training

/// Data files at the edges: a byte-order mark, CRLF line ends, invalid UTF-8, ids that are valid JSON but
/// not integer token ids, unreadable files, and data with nothing to measure.
@Suite struct EdgeDataTests {
    static let vocabulary = ChatDatasetTests.smolLM2Vocabulary

    static func writeBytes(_ scratch: Scratch, _ name: String, _ bytes: [UInt8]) throws -> URL {
        let url = scratch.url.appendingPathComponent(name)
        try Data(bytes).write(to: url)
        return url
    }

    /// A BOM at the start of a data file is an encoding signature: the examples equal the file's without it
    /// (Python's `json.loads(bytes)` and HF datasets skip it); CRLF line ends change nothing either.
    @Test func byteOrderMarkAndCRLFAreNotContent() throws {
        let scratch = try Scratch()
        for file in ["messages.jsonl", "alpaca.json", "pretokenized.jsonl"] {
            let original = [UInt8](try Data(contentsOf: ChatFixtures.url("data", file)))
            let expected = try ChatDatasetTests.load(ChatFixtures.url("data", file)).examples
            let withBOM = try Self.writeBytes(scratch, "bom-" + file, TextBytes.byteOrderMark + original)
            #expect(try ChatDatasetTests.load(withBOM).examples == expected, "\(file) with a BOM")
            let crlf = original.flatMap { $0 == 0x0A ? [0x0D, 0x0A] : [$0] }
            let withCRLF = try Self.writeBytes(scratch, "crlf-" + file, TextBytes.byteOrderMark + crlf)
            #expect(try ChatDatasetTests.load(withCRLF).examples == expected, "\(file) with CRLF")
        }
        // Anywhere else outside a string it is an error naming the line (JSONSerialization skipped it silently
        // at the start of a JSONL line; Python's json.loads(line) refuses it).
        let record = Array(#"{"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}"#.utf8) + [0x0A]
        let midChat = try Self.writeBytes(scratch, "mid.jsonl", record + TextBytes.byteOrderMark + record)
        let chatError = #expect(throws: DataError.self) { _ = try ChatDatasetTests.load(midChat) }
        #expect(chatError?.description == "\(midChat.path):2: a byte-order mark (EF BB BF) starts the line: only the file's first bytes may be one")
        let ids = Array(#"{"input_ids": [1, 2]}"#.utf8) + [0x0A]
        let midIDs = try Self.writeBytes(scratch, "mid-ids.jsonl", ids + TextBytes.byteOrderMark + ids)
        let idsError = #expect(throws: DataError.self) { _ = try TokenizedDataset.load(from: midIDs, vocabularySize: 256) }
        #expect(idsError?.description.hasSuffix("malformed JSON at column 1: a byte-order mark (EF BB BF), expected a value") == true,
                "\(idsError.map(String.init(describing:)) ?? "")")
        // Inside a JSON string a BOM is content, kept as the tokenizer's ids for U+FEFF.
        let inString = try scratch.file("in-string.jsonl", #"{"messages": [{"role": "user", "content": "\ufeffHi"}, {"role": "assistant", "content": "Yo"}]}"#)
        let encoded = try ChatDatasetTests.load(inString).examples[0].inputIDs.map(Int.init)
        #expect(encoded.firstIndex(of: 186).map { Array(encoded[$0..<$0 + 3]) } == [186, 136, 140], "\(encoded)")
    }

    /// Invalid UTF-8 anywhere in a data file is an error naming the line and byte offset, never U+FFFD.
    @Test func invalidUTF8NamesLineAndOffset() throws {
        let scratch = try Scratch()
        let good = Array(#"{"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}"#.utf8) + [0x0A]
        let bad = Array(#"{"messages": [{"role": "user", "content": "caf"#.utf8) + [0xE9] + Array(#""}, {"role": "assistant", "content": "b"}]}"#.utf8)
        for (name, vocabulary) in [("chat.jsonl", Self.vocabulary)] {
            let url = try Self.writeBytes(scratch, name, good + bad)
            let error = #expect(throws: InvalidUTF8Error.self) {
                _ = try ChatDataset.load(from: url, vocabularySize: vocabulary, encoder: ChatDatasetTests.encoder)
            }
            #expect(error?.description.hasPrefix("\(url.path):2: invalid UTF-8 at byte offset \(good.count + 46) (0xE9)") == true,
                    "\(error.map(String.init(describing:)) ?? "")")
        }
        let pretokenized = try Self.writeBytes(scratch, "ids.jsonl", Array("{\"input_ids\": [1, 2]}\n{\"input_ids\": [1], \"x\": \"".utf8) + [0xFF, 0x22, 0x7D])
        let error = #expect(throws: InvalidUTF8Error.self) { _ = try TokenizedDataset.load(from: pretokenized, vocabularySize: 256) }
        #expect(error?.line == 2 && error?.byteOffset == 47, "\(error.map(String.init(describing:)) ?? "")")
    }

    /// Valid JSON with a float or an out-of-range integer where a token id belongs says so (it was
    /// "expected a JSON object …: wrong type" from JSONDecoder, or a truncated id).
    @Test func nonIntegerIdsAreNamed() throws {
        let scratch = try ScratchFile()
        let cases: [(String, String)] = [
            (#"{"input_ids": [1, 2, 3, 1.5], "labels": [1, 2, 3, 4]}"#, "input_ids[3] is 1.5: expected an integer token id"),
            (#"{"input_ids": [1, 2], "labels": [-100, 2e0]}"#, "labels[1] is 2.0: expected an integer token id"),
            (#"{"input_ids": [1, "2"]}"#, "input_ids[1] is string \"2\": expected an integer token id"),
            (#"{"input_ids": [1, 99999999999999999999]}"#, "input_ids[1] is 1e+20: an integer beyond 64 bits, outside any vocabulary"),
            (#"{"input_ids": [1, 4294967297]}"#, "input_ids[1] = 4294967297 is outside the vocabulary (0..<256)"),
            (#"{"input_ids": 7}"#, "input_ids must be a list of integer token ids, found number 7"),
        ]
        for (line, message) in cases {
            let url = try scratch.write("{\"input_ids\": [1]}\n" + line + "\n")
            let error = #expect(throws: DataError.self) { _ = try TokenizedDataset.load(from: url, vocabularySize: 256) }
            #expect(error?.description == "\(url.path):2: \(message)", "\(error.map(String.init(describing:)) ?? "")")
        }
        // Other keys are ignored, a repeated key takes its last value, null labels mean "all trained".
        let url = try scratch.write(#"{"input_ids": [9], "input_ids": [1, 2], "attention_mask": [1, 1], "labels": null}"# + "\r\n")
        #expect(try TokenizedDataset.load(from: url, vocabularySize: 256) == [SFTExample(inputIDs: [1, 2], labels: [1, 2])])
    }

    /// A missing file names the path and the failing call, never "The operation could not be completed".
    @Test func unreadableFileNamesPathAndCall() throws {
        let missing = FileManager.default.temporaryDirectory.appendingPathComponent("zero-sft-absent-\(UUID().uuidString).jsonl")
        for load in [{ _ = try ChatDatasetTests.load(missing) }, { _ = try TokenizedDataset.load(from: missing, vocabularySize: 256) }] {
            let error = #expect(throws: DataError.self) { try load() }
            #expect(error?.description == "\(missing.path): cannot read: open failed: No such file or directory (errno 2)",
                    "\(error.map(String.init(describing:)) ?? "")")
        }
    }

    /// A chat template file that is not UTF-8 names its offset (it was Foundation's "The operation could not
    /// be completed. The file isn’t in the correct format.").
    @Test func chatTemplateFileBytes() throws {
        let scratch = try Scratch()
        try FileManager.default.copyItem(at: ChatFixtures.smolLM2TokenizerJSON, to: scratch.url.appendingPathComponent("tokenizer.json"))
        let jinja = try Self.writeBytes(scratch, "chat_template.jinja", Array("{{ bad ".utf8) + [0xFF] + Array(" }}".utf8))
        let error = #expect(throws: InvalidUTF8Error.self) { _ = try TextSetup.load(model: scratch.url.path) }
        #expect(error?.description.hasPrefix("\(jinja.path):1: invalid UTF-8 at byte offset 7 (0xFF)") == true,
                "\(error.map(String.init(describing:)) ?? "")")
    }

    /// An evaluation with no supervised token is refused before any rank works: all labels -100, or every
    /// supervised label beyond the sequence length.
    @Test func emptyEvaluationIsRefused() throws {
        let allMasked = SFTExample(inputIDs: [1, 2, 3, 4], labels: [-100, -100, -100, -100])
        let late = SFTExample(inputIDs: [1, 2, 3, 4, 5], labels: [-100, -100, -100, 4, 5])
        let firstOnly = SFTExample(inputIDs: [1, 2], labels: [1, -100])   // position 0 is never predicted
        for (examples, length, message) in [
            ([allMasked], 8, "no supervised token in 1 example (every label is -100)"),
            ([allMasked, late], 3, "no supervised token in 2 examples within the first 3 tokens (1 have supervised tokens only past --seq-len 3"),
            ([firstOnly], 8, "(every label is -100)"),
        ] {
            let error = #expect(throws: EmptyEvaluationError.self) { try EmptyEvaluationError.check(examples, sequenceLength: length) }
            #expect(error?.description.contains(message) == true, "\(error.map(String.init(describing:)) ?? "")")
        }
        try EmptyEvaluationError.check([allMasked, late], sequenceLength: 4)
    }

    /// train's default learning rate is an SFT rate (TRL's SFTConfig default), not a pretraining rate.
    @Test func defaultLearningRateIsTRLs() {
        #expect(TrainingOptions().learningRate == 2e-5)
    }
}

/// A scratch file rewritten per case.
final class ScratchFile {
    let scratch: Scratch
    let url: URL
    init() throws {
        scratch = try Scratch()
        url = scratch.url.appendingPathComponent("ids.jsonl")
    }
    func write(_ text: String) throws -> URL {
        try Data(text.utf8).write(to: url)
        return url
    }
}
