import Checkpoints
import Foundation
import Tokenizers

/// One training example in HF's convention: `labels[t]` is the token trained at position `t`
/// (it equals `input_ids[t]`), `-100` where nothing is trained. The one-position shift happens when
/// examples are packed (``Models/TokenBatch``).
public struct SFTExample: Sendable, Equatable, Codable {
    public var inputIDs: [Int32]
    public var labels: [Int32]

    public init(inputIDs: [Int32], labels: [Int32]) {
        precondition(inputIDs.count == labels.count, "SFTExample: input_ids and labels differ in length")
        self.inputIDs = inputIDs
        self.labels = labels
    }

    enum CodingKeys: String, CodingKey {
        case inputIDs = "input_ids"
        case labels
    }

    /// Positions whose label is trained (the first position never is: nothing predicts it).
    public var supervisedCount: Int { labels.dropFirst().reduce(0) { $0 + ($1 == -100 ? 0 : 1) } }
    public var count: Int { inputIDs.count }
}

/// Bad training data: the message names the file, the line and what was expected.
public struct DataError: Error, CustomStringConvertible {
    public var path: String
    public var line: Int?
    public var message: String
    public init(path: String, line: Int?, message: String) {
        self.path = path
        self.line = line
        self.message = message
    }
    public var description: String { line.map { "\(path):\($0): \(message)" } ?? "\(path): \(message)" }
}

/// Pre-tokenized JSONL: one `{"input_ids": [...], "labels": [...]}` per line (`labels` optional:
/// without it every token is trained, as in HF). Other keys (`attention_mask`, …) are ignored; a repeated
/// key takes its last value, as Python's `json` does.
///
/// Bytes: the file is strict UTF-8 (an invalid byte is an error with its line and offset); a byte-order
/// mark at the start of the file is skipped (see ``Tokenizers/TextBytes``); lines may end in `\r\n`.
/// Ids must be JSON integers, as HF needs `int` ids: `1.5`, `1.0` and `1e2` are refused by name.
public enum TokenizedDataset {
    public static func load(from url: URL, vocabularySize: Int) throws -> [SFTExample] {
        let data: [UInt8]
        do { data = try FileContents.read(url.path) } catch {
            throw DataError(path: url.path, line: nil, message: "cannot read: \(error.operation) failed: \(error.reason)")
        }
        try TextBytes.validate(data, source: url.path)
        let body = TextBytes.startsWithByteOrderMark(data) ? data.dropFirst(3) : data[...]
        var examples: [SFTExample] = []
        var lineNumber = 0
        for line in body.split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: false) {
            lineNumber += 1
            if line.allSatisfy({ $0 == 0x20 || $0 == 0x0D || $0 == 0x09 }) { continue }
            func fail(_ message: String) -> DataError { DataError(path: url.path, line: lineNumber, message: message) }
            let expected = "expected a JSON object {\"input_ids\": [int], \"labels\": [int]}"
            let value: JSONValue
            do { value = try JSONParser.parse(Array(line)) } catch {
                throw fail("\(expected): malformed JSON at column \(error.column): \(error.message)")
            }
            guard case .object = value else { throw fail("\(expected), found \(value.kindName)") }
            guard let idsValue = value["input_ids"] else { throw fail("\(expected): missing key \"input_ids\"") }
            let inputIDs = try ids(idsValue, key: "input_ids", fail: fail)
            var labels = inputIDs
            if let labelsValue = value["labels"], !isNull(labelsValue) {
                labels = try ids(labelsValue, key: "labels", fail: fail)
            }
            guard labels.count == inputIDs.count else {
                throw fail("labels has \(labels.count) entries, input_ids has \(inputIDs.count): they must be equal")
            }
            if let bad = inputIDs.firstIndex(where: { $0 < 0 || $0 >= vocabularySize }) {
                throw fail("input_ids[\(bad)] = \(inputIDs[bad]) is outside the vocabulary (0..<\(vocabularySize))")
            }
            if let bad = labels.firstIndex(where: { $0 != -100 && ($0 < 0 || $0 >= vocabularySize) }) {
                throw fail("labels[\(bad)] = \(labels[bad]) is neither -100 nor a token id (0..<\(vocabularySize))")
            }
            examples.append(SFTExample(inputIDs: inputIDs.map { Int32($0) }, labels: labels.map { Int32($0) }))
        }
        if examples.isEmpty { throw DataError(path: url.path, line: nil, message: "no examples (the file is empty)") }
        return examples
    }

    static func isNull(_ value: JSONValue) -> Bool {
        if case .null = value { return true }
        return false
    }

    /// The integers of a JSON array of token ids (their range is the caller's check).
    static func ids(_ value: JSONValue, key: String, fail: (String) -> DataError) throws -> [Int] {
        guard case .array(let items) = value else { throw fail("\(key) must be a list of integer token ids, found \(value.kindName)") }
        var result: [Int] = []
        result.reserveCapacity(items.count)
        for (index, item) in items.enumerated() {
            switch item {
            case .integer(let id):
                result.append(id)
            case .number(let number) where number.rounded() == number && abs(number) >= 0x1p63:
                throw fail("\(key)[\(index)] is \(number): an integer beyond 64 bits, outside any vocabulary")
            case .number(let number):
                throw fail("\(key)[\(index)] is \(number): expected an integer token id")
            default:
                throw fail("\(key)[\(index)] is \(item.kindName): expected an integer token id")
            }
        }
        return result
    }

    /// Writes examples as JSONL in the same form ``load(from:vocabularySize:)`` reads.
    public static func jsonLine(_ example: SFTExample) -> String {
        "{\"input_ids\": [\(example.inputIDs.map(String.init).joined(separator: ", "))], \"labels\": [\(example.labels.map(String.init).joined(separator: ", "))]}"
    }
}
