import Foundation
import Testing
import Tokenizers

/// The byte rules at the edges of text input (docs/tokenizer.md), against HF `tokenizers` and Python's
/// strict UTF-8 decoder (goldens from `tools/generate_edge_goldens.py`).
@Suite struct EdgeBytesTests {
    struct Goldens: Decodable {
        struct Encode: Decodable { var text: String; var ids: [Int] }
        struct Invalid: Decodable { var hex: String; var offset: Int; var length: Int }
        var encode: [Encode]
        var invalid_utf8: [Invalid]
    }

    static let goldens: Goldens = {
        let data = try! Data(contentsOf: Fixtures.url("smollm2", "edge_goldens.json"))
        return try! JSONDecoder().decode(Goldens.self, from: data)
    }()

    static func bytes(hex: String) -> [UInt8] {
        var result: [UInt8] = []
        var index = hex.startIndex
        while index < hex.endIndex {
            let next = hex.index(index, offsetBy: 2)
            result.append(UInt8(hex[index..<next], radix: 16)!)
            index = next
        }
        return result
    }

    /// A BOM, `\r\n` and other edge characters are content: the ids HF gives for the same Python str.
    @Test func edgeCharactersEncodeAsHF() throws {
        let tokenizer = try Fixtures.tokenizer("smollm2")
        for golden in Self.goldens.encode {
            #expect(tokenizer.encode(golden.text) == golden.ids, "\(golden.text.debugDescription)")
        }
    }

    /// Decoding text keeps a leading BOM (Foundation's `String(data:encoding:)` drops it: `tokenize` gave
    /// [19556] for "\u{FEFF}Hello" where HF gives [186, 136, 140, 19556]).
    @Test func decodeKeepsByteOrderMark() throws {
        let text = try TextBytes.decode(TextBytes.byteOrderMark + Array("Hello".utf8), source: "test")
        #expect(text.unicodeScalars.first == "\u{FEFF}")
        #expect(try Fixtures.tokenizer("smollm2").encode(text) == [186, 136, 140, 19556])
    }

    /// The first invalid sequence is where Python's strict decoder reports it (offset and length).
    @Test func invalidUTF8IsLocatedAsPythonLocatesIt() {
        for golden in Self.goldens.invalid_utf8 {
            let bytes = Self.bytes(hex: golden.hex)
            #expect(TextBytes.firstInvalidUTF8(in: bytes) == golden.offset, "\(golden.hex)")
            let error = #expect(throws: InvalidUTF8Error.self) { try TextBytes.decode(bytes, source: "input.txt") }
            #expect(error?.byteOffset == golden.offset, "\(golden.hex)")
            #expect(error?.found.count == golden.length, "\(golden.hex): \(error?.found ?? [])")
        }
        let error = #expect(throws: InvalidUTF8Error.self) { try TextBytes.decode(Array("line1\nline2 ".utf8) + [0x80], source: "a.txt") }
        #expect(error?.description.hasPrefix("a.txt:2: invalid UTF-8 at byte offset 12 (0x80)") == true, "\(error.map(String.init(describing:)) ?? "")")
        #expect(TextBytes.firstInvalidUTF8(in: Array("ok \u{FEFF} 🙂".utf8)) == nil)
    }

    /// A tokenizer.json or merges.txt that starts with a BOM is refused by name, as HF tokenizers refuses it
    /// (serde_json: "expected value at line 1 column 1").
    @Test func byteOrderMarkInTokenizerFilesIsNamed() throws {
        let folder = try LoadingErrorTests.temporaryDirectory()
        let json = folder.appendingPathComponent("tokenizer.json")
        try Data(TextBytes.byteOrderMark + Array(try Data(contentsOf: Fixtures.url("variety-synthetic", "tokenizer.json")))).write(to: json)
        let error = #expect(throws: TokenizerError.self) { try Tokenizer(tokenizerJSON: json) }
        #expect(error?.description.contains("byte-order mark") == true, "\(error.map(String.init(describing:)) ?? "")")

        let merges = folder.appendingPathComponent("merges.txt")
        try Data(TextBytes.byteOrderMark + Array("#version: 0.2\nĠ t\n".utf8)).write(to: merges)
        let mergesError = #expect(throws: TokenizerError.self) {
            try Tokenizer(vocabJSON: Fixtures.url("gpt2", "vocab.json"), mergesTXT: merges)
        }
        #expect(mergesError?.file == merges.path && mergesError?.description.contains("byte-order mark") == true)
    }

    /// A missing or unreadable file names the path and the failing call, not Foundation's NSCocoaErrorDomain text.
    @Test func unreadableFileNamesTheCall() throws {
        let missing = try LoadingErrorTests.temporaryDirectory().appendingPathComponent("absent.json")
        let error = #expect(throws: TokenizerError.self) { try Tokenizer(tokenizerJSON: missing) }
        #expect(error?.found == "open failed: No such file or directory (errno 2)", "\(error.map(String.init(describing:)) ?? "")")
    }

    /// Integers stay integers (Python's `int`); a fraction or exponent makes a `float`, as in Python's `json`.
    @Test func jsonIntegersAreDistinguished() throws {
        guard case .array(let items) = try JSONParser.parse(Array("[7, -3, 1.0, 1e2, 1.5, 99999999999999999999]".utf8)) else {
            Issue.record("not an array")
            return
        }
        #expect(items.count == 6)
        if case .integer(let value) = items[0] { #expect(value == 7) } else { Issue.record("7: \(items[0])") }
        if case .integer(let value) = items[1] { #expect(value == -3) } else { Issue.record("-3: \(items[1])") }
        for item in items[2...] {
            if case .number = item {} else { Issue.record("expected a float: \(item)") }
        }
        // A repeated key takes its last value, as Python's json does.
        #expect(try JSONParser.parse(Array(#"{"a": 1, "a": 2}"#.utf8))["a"]?.double == 2)
    }
}
