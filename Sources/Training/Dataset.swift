import Checkpoints
import Foundation

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
    public var description: String { line.map { "\(path):\($0): \(message)" } ?? "\(path): \(message)" }
}

/// Pre-tokenized JSONL: one `{"input_ids": [...], "labels": [...]}` per line (`labels` optional:
/// without it every token is trained, as in HF).
public enum TokenizedDataset {
    public static func load(from url: URL, vocabularySize: Int) throws -> [SFTExample] {
        let data: Data
        do { data = try Data(contentsOf: url) } catch {
            throw DataError(path: url.path, line: nil, message: "cannot read: \(error.localizedDescription)")
        }
        var examples: [SFTExample] = []
        var lineNumber = 0
        let decoder = JSONDecoder()
        for line in data.split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: false) {
            lineNumber += 1
            let trimmed = line.drop { $0 == UInt8(ascii: " ") || $0 == UInt8(ascii: "\r") || $0 == UInt8(ascii: "\t") }
            if trimmed.isEmpty { continue }
            struct Line: Decodable {
                var input_ids: [Int]
                var labels: [Int]?
            }
            let parsed: Line
            // A repeated key takes its last value, as Python's json and the text formats' parser (JSONDecoder keeps the first).
            var bytes = Data(line)
            if JSONLastKeyWins.mayRepeat(["input_ids", "labels"], in: bytes) { bytes = JSONLastKeyWins.normalized(bytes) }
            do { parsed = try decoder.decode(Line.self, from: bytes) } catch {
                throw DataError(path: url.path, line: lineNumber,
                                message: "expected a JSON object {\"input_ids\": [int], \"labels\": [int]}: \(describe(error))")
            }
            let labels = parsed.labels ?? parsed.input_ids
            guard labels.count == parsed.input_ids.count else {
                throw DataError(path: url.path, line: lineNumber,
                                message: "labels has \(labels.count) entries, input_ids has \(parsed.input_ids.count): they must be equal")
            }
            if let bad = parsed.input_ids.firstIndex(where: { $0 < 0 || $0 >= vocabularySize }) {
                throw DataError(path: url.path, line: lineNumber,
                                message: "input_ids[\(bad)] = \(parsed.input_ids[bad]) is outside the vocabulary (0..<\(vocabularySize))")
            }
            if let bad = labels.firstIndex(where: { $0 != -100 && ($0 < 0 || $0 >= vocabularySize) }) {
                throw DataError(path: url.path, line: lineNumber,
                                message: "labels[\(bad)] = \(labels[bad]) is neither -100 nor a token id (0..<\(vocabularySize))")
            }
            examples.append(SFTExample(inputIDs: parsed.input_ids.map(Int32.init), labels: labels.map(Int32.init)))
        }
        if examples.isEmpty { throw DataError(path: url.path, line: nil, message: "no examples (the file is empty)") }
        return examples
    }

    static func describe(_ error: Error) -> String {
        switch error {
        case DecodingError.keyNotFound(let key, _): "missing key \"\(key.stringValue)\""
        case DecodingError.typeMismatch(_, let context): "wrong type at \(context.codingPath.map(\.stringValue).joined(separator: ".")): \(context.debugDescription)"
        case DecodingError.dataCorrupted(let context): "malformed JSON: \(context.underlyingError.map { "\($0)" } ?? context.debugDescription)"
        default: "\(error)"
        }
    }

    /// Writes examples as JSONL in the same form ``load(from:vocabularySize:)`` reads.
    public static func jsonLine(_ example: SFTExample) -> String {
        "{\"input_ids\": [\(example.inputIDs.map(String.init).joined(separator: ", "))], \"labels\": [\(example.labels.map(String.init).joined(separator: ", "))]}"
    }
}
