import Checkpoints
import Foundation
import Tokenizers

/// The record formats a data file may hold, detected from its first record (every record must match it).
public enum DataFormat: String, Sendable, Equatable, CaseIterable {
    /// `{"messages": [{"role": "system"|"user"|"assistant", "content": "…"}, …]}` (OpenAI / HF chat).
    case messages
    /// `{"prompt": "…", "completion": "…"}`; either side may also be a list of messages (TRL's
    /// conversational prompt-completion).
    case promptCompletion = "prompt/completion"
    /// `{"instruction": "…", "input": "…", "output": "…"}` (optional `system`): the user message is the
    /// instruction, then a newline and the input when there is one; the assistant message is the output.
    case alpaca
    /// `{"input_ids": [...], "labels": [...]}`: already tokenized (``TokenizedDataset``).
    case pretokenized = "pre-tokenized"

    /// The keys that identify the format, for error messages.
    static let keysDescription = "\"messages\", \"prompt\" + \"completion\", \"instruction\" + \"output\" or \"input_ids\""
}

/// How text records become examples.
public struct ChatDataOptions: Sendable, Equatable {
    public var trainOn: TrainOn = .assistant
    /// A conversation without any supervised token is an error instead of being skipped and counted.
    public var strict = false
    /// The training sequence length the long-example policy applies to (nil: no policy, nothing counted).
    public var sequenceLength: Int?
    /// What happens to an example longer than `sequenceLength` (`--long-examples`).
    public var longExamples = LongExamplePolicy.truncate

    public init(trainOn: TrainOn = .assistant, strict: Bool = false, sequenceLength: Int? = nil,
                longExamples: LongExamplePolicy = .truncate) {
        self.trainOn = trainOn
        self.strict = strict
        self.sequenceLength = sequenceLength
        self.longExamples = longExamples
    }
}

/// What the long-example policy did (`--long-examples`, against `--seq-len`).
public struct LongExampleReport: Sendable, Equatable {
    public var policy = LongExamplePolicy.truncate
    public var sequenceLength = 0
    /// Records longer than the sequence length, and the first of them (line, or position in a JSON array).
    public var count = 0
    public var first: Int?
    /// Supervised tokens of those records: in all, within their first `sequenceLength` tokens (what
    /// `truncate` keeps), and what the policy kept (`split`: in the pieces; `drop`: none).
    public var supervised = 0
    public var keptByTruncation = 0
    public var kept = 0
    /// `split`: records cut into pieces, the pieces, and pieces whose one turn alone exceeds the sequence
    /// length (its prompt left out, then cut to it: ``LongExamples/split(_:at:limit:)``).
    public var split = 0
    public var pieces = 0
    public var truncatedPieces = 0
    /// `split`: records without an exact cut point (``ChatEncoder/turnBoundaries(_:ids:)``), kept whole
    /// and truncated.
    public var unsplittable = 0

    public var summary: String {
        guard count > 0 else { return "none longer than --seq-len \(sequenceLength)" }
        let first = first.map { " (the first: \($0))" } ?? ""
        var text = "\(count) longer than --seq-len \(sequenceLength)\(first), "
        switch policy {
        case .truncate, .error:
            text += "truncated: \(keptByTruncation) of their \(supervised) supervised tokens kept"
        case .drop:
            text += "dropped with their \(supervised) supervised tokens (truncate would keep \(keptByTruncation))"
        case .split:
            text += "\(split) split into \(pieces) examples: \(kept) of their \(supervised) supervised tokens kept "
                + "(truncate would keep \(keptByTruncation))"
            if truncatedPieces > 0 {
                text += "; \(truncatedPieces) turn(s) longer than --seq-len with the system prompt: trained without their prompt, cut to fit"
            }
            if unsplittable > 0 { text += "; \(unsplittable) without a cut point at a special token, truncated" }
        }
        return text
    }
}

/// What loading a data file did: nothing is dropped silently.
public struct DataLoadReport: Sendable, Equatable {
    public var path: String
    public var format: DataFormat
    /// Records read (JSONL lines or JSON array elements).
    public var records = 0
    /// Records without a supervised token, skipped (their line numbers, or array positions counted from 1).
    public var skippedUnsupervised: [Int] = []
    /// Whether records are numbered by line (JSONL) or by position in a JSON array.
    public var numberedByLine = true
    /// Examples longer than the sequence length (when the options give one).
    public var long: LongExampleReport?

    public init(path: String, format: DataFormat) {
        self.path = path
        self.format = format
    }

    public var summary: String {
        var text = "\(path): \(records) record\(records == 1 ? "" : "s") (\(format.rawValue))"
        if !skippedUnsupervised.isEmpty {
            let shown = skippedUnsupervised.prefix(10).map(String.init).joined(separator: ", ")
            text += "; \(skippedUnsupervised.count) skipped: no supervised token (\(numberedByLine ? "line" : "record")"
                + "\(skippedUnsupervised.count == 1 ? "" : "s") \(shown)\(skippedUnsupervised.count > 10 ? ", …" : ""))"
        }
        if let long, long.count > 0 {
            text += "; " + long.summary.replacingOccurrences(of: "(the first: ", with: "(the first: \(numberedByLine ? "line" : "record") ")
        }
        return text
    }
}

/// Examples and the report of how they were made.
public struct LoadedData: Sendable {
    public var examples: [SFTExample]
    public var report: DataLoadReport
    /// Where each example came from (line number or array position), parallel to `examples`.
    public var recordNumbers: [Int]
}

/// Chat and instruction data files turned into training examples with a model's chat template.
///
/// Files are JSONL (one record per line) or one JSON array of records (alpaca's `alpaca_data.json`).
/// Labels come from the spans of the assistant turns in the rendered conversation (``ChatEncoder``),
/// never from searching for template markers.
public enum ChatDataset {
    /// Loads `url`: pre-tokenized files directly (no tokenizer needed); text files with the encoder that
    /// `encoder()` returns (called only for text, so a preset model can still train on pre-tokenized data).
    /// Ids must be below `vocabularySize` (the model's).
    public static func load(
        from url: URL, vocabularySize: Int, options: ChatDataOptions = ChatDataOptions(), encoder: () throws -> ChatEncoder
    ) throws -> LoadedData {
        let data = try readText(url)
        // The first record decides the format; pre-tokenized files are then read by TokenizedDataset alone.
        guard let first = try records(in: data, path: url.path, limit: 1).first else {
            throw DataError(path: url.path, line: nil, message: "no examples (the file is empty)")
        }
        let format = try detect(first.object, path: url.path, line: first.number)
        var report = DataLoadReport(path: url.path, format: format)
        report.numberedByLine = !isJSONArray(data)
        if format == .pretokenized {
            guard report.numberedByLine else {
                throw DataError(path: url.path, line: nil, message: "pre-tokenized data must be JSONL (one {\"input_ids\": …} object per line), not a JSON array")
            }
            if options.sequenceLength != nil && options.longExamples == .split {
                throw DataError(path: url.path, line: nil, message: "--long-examples split cuts conversations at turn boundaries, which "
                                + "pre-tokenized records do not carry: give the text data (messages, prompt/completion, alpaca), "
                                + "or --long-examples truncate, drop or error")
            }
            let all = try TokenizedDataset.load(from: url, vocabularySize: vocabularySize)
            report.records = all.count
            var allNumbers: [Int] = []
            for (index, line) in data.split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: false).enumerated()
            where !isBlank(line) { allNumbers.append(index + 1) }
            var examples: [SFTExample] = [], numbers: [Int] = []
            for (example, number) in zip(all, allNumbers) {
                let kept = try applyLongExamplePolicy(example, options: options, report: &report, record: number) {
                    DataError(path: url.path, line: number, message: $0)
                } split: { nil }
                examples += kept
                numbers += [Int](repeating: number, count: kept.count)
            }
            if examples.isEmpty {
                throw DataError(path: url.path, line: nil, message: "no example left: all \(all.count) are longer than --seq-len and dropped")
            }
            return LoadedData(examples: examples, report: report, recordNumbers: numbers)
        }
        let parsed = try parseText(data, url: url, format: format, numberedByLine: report.numberedByLine)
        let encoder = try encoder()
        let encoded = try parsed.encode(0..<parsed.conversations.count, encoder: encoder, options: options, vocabularySize: vocabularySize)
        return try parsed.loaded(encoded, options: options, encoder: encoder)
    }

    /// Parses and validates `url` without tokenizing: pre-tokenized files are loaded whole (nothing to
    /// tokenize), text files become validated conversations (``ParsedChatData``) to encode later, possibly
    /// in slices on several ranks. Every error a record can have except its token ids is found here.
    public static func parse(from url: URL, vocabularySize: Int) throws -> ParsedData {
        let data = try readText(url)
        guard let first = try records(in: data, path: url.path, limit: 1).first else {
            throw DataError(path: url.path, line: nil, message: "no examples (the file is empty)")
        }
        let format = try detect(first.object, path: url.path, line: first.number)
        if format == .pretokenized {
            return .pretokenized(try load(from: url, vocabularySize: vocabularySize) { preconditionFailure("pre-tokenized data needs no encoder") })
        }
        return .text(try parseText(data, url: url, format: format, numberedByLine: !isJSONArray(data)))
    }

    static func parseText(_ data: Data, url: URL, format: DataFormat, numberedByLine: Bool) throws -> ParsedChatData {
        var parsed = ParsedChatData(path: url.path, format: format, numberedByLine: numberedByLine, bytes: data.count)
        let records = try self.records(in: data, path: url.path)
        parsed.conversations.reserveCapacity(records.count)
        for (index, record) in records.enumerated() {
            let line = numberedByLine ? record.number : nil
            func fail(_ message: String) -> DataError {
                DataError(path: url.path, line: line, message: numberedByLine ? message : "record \(record.number): \(message)")
            }
            let found = try detect(record.object, path: url.path, line: line)
            guard found == format else {
                throw fail("a \(found.rawValue) record in a \(format.rawValue) file (the first record decides the format)")
            }
            parsed.conversations.append(try conversation(record.object, format: format, fail: fail))
            parsed.recordNumbers.append(record.number)
            parsed.recordEnds.append(record.end ?? (index + 1) * data.count / records.count)
        }
        return parsed
    }

    /// The examples `example` becomes under `options.longExamples` (itself when it fits or is truncated
    /// later, when packed; none when dropped; its pieces when split), counted in `report.long`.
    static func applyLongExamplePolicy(
        _ example: SFTExample, options: ChatDataOptions, report: inout DataLoadReport, record: Int,
        fail: (String) -> DataError, split boundaries: () -> TurnBoundaries?
    ) throws -> [SFTExample] {
        guard let limit = options.sequenceLength else { return [example] }
        var long = report.long ?? LongExampleReport(policy: options.longExamples, sequenceLength: limit)
        defer { report.long = long }
        guard example.count > limit else { return [example] }
        if options.longExamples == .error {
            throw fail("\(example.count) tokens, longer than --seq-len \(limit) (--long-examples error; "
                       + "truncate, split or drop would take it)")
        }
        long.count += 1
        if long.first == nil { long.first = record }
        let supervised = example.supervisedCount, truncated = LongExamples.supervisedWithin(example, limit: limit)
        long.supervised += supervised
        long.keptByTruncation += truncated
        switch options.longExamples {
        case .truncate, .error:
            long.kept += truncated
            return [example]
        case .drop:
            return []
        case .split:
            guard let boundaries = boundaries() else {
                long.unsplittable += 1
                long.kept += truncated
                return [example]
            }
            let (pieces, cut) = LongExamples.split(example, at: boundaries, limit: limit)
            long.split += 1
            long.pieces += pieces.count
            long.truncatedPieces += cut
            long.kept += pieces.reduce(0) { $0 + $1.supervisedCount }
            return pieces
        }
    }

    /// The format of a file, from its first record.
    public static func detectFormat(of url: URL) throws -> DataFormat {
        let data = try readText(url)
        guard let first = try records(in: data, path: url.path, limit: 1).first else {
            throw DataError(path: url.path, line: nil, message: "no examples (the file is empty)")
        }
        return try detect(first.object, path: url.path, line: first.number)
    }

    /// The file's bytes, checked to be UTF-8 (an error names the line and byte offset; nothing is replaced),
    /// without a leading byte-order mark (an encoding signature, skipped as `json.loads(bytes)` and HF
    /// `datasets` skip it; see ``Tokenizers/TextBytes``).
    static func readText(_ url: URL) throws -> Data {
        let bytes: [UInt8]
        do { bytes = try FileContents.read(url.path) } catch {
            throw DataError(path: url.path, line: nil, message: "cannot read: \(error.operation) failed: \(error.reason)")
        }
        try TextBytes.validate(bytes, source: url.path)
        return Data(TextBytes.startsWithByteOrderMark(bytes) ? bytes.dropFirst(3) : bytes[...])
    }

    // MARK: - Records

    struct Record {
        /// Line number (JSONL) or position in the array counted from 1.
        var number: Int
        var object: [String: Any]
        /// Byte offset of the end of its line (JSONL).
        var end: Int? = nil
    }

    static func isJSONArray(_ data: Data) -> Bool {
        data.first { !($0 == 0x20 || $0 == 0x0A || $0 == 0x0D || $0 == 0x09) } == UInt8(ascii: "[")
    }

    static func isBlank(_ line: Data.SubSequence) -> Bool {
        line.allSatisfy { $0 == 0x20 || $0 == 0x0D || $0 == 0x09 }
    }

    /// The records of a file (at most `limit` from a JSONL file).
    static func records(in data: Data, path: String, limit: Int = .max) throws -> [Record] {
        if isJSONArray(data) {
            let object: Any
            do { object = try JSONSerialization.jsonObject(with: data) } catch {
                throw DataError(path: path, line: nil, message: "malformed JSON array: \(describe(error))")
            }
            guard let array = object as? [Any] else { throw DataError(path: path, line: nil, message: "expected a JSON array of objects") }
            return try array.enumerated().map { index, element in
                guard let dictionary = element as? [String: Any] else {
                    throw DataError(path: path, line: nil, message: "record \(index + 1): expected a JSON object, found \(typeName(element))")
                }
                return Record(number: index + 1, object: dictionary)
            }
        }
        var result: [Record] = []
        var lineNumber = 0
        for line in data.split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: false) {
            lineNumber += 1
            if isBlank(line) { continue }
            // JSONSerialization would skip a BOM here; only the file's first bytes may be one (Python's
            // json.loads(line) refuses it too).
            if TextBytes.startsWithByteOrderMark(line.drop { $0 == 0x20 || $0 == 0x09 }) {
                throw DataError(path: path, line: lineNumber, message: "a byte-order mark (EF BB BF) starts the line: only the file's first bytes may be one")
            }
            let object: Any
            do { object = try JSONSerialization.jsonObject(with: Data(line), options: .fragmentsAllowed) } catch {
                throw DataError(path: path, line: lineNumber, message: "malformed JSON: \(describe(error))")
            }
            guard let dictionary = object as? [String: Any] else {
                throw DataError(path: path, line: lineNumber, message: "expected a JSON object, found \(typeName(object))")
            }
            result.append(Record(number: lineNumber, object: dictionary, end: line.endIndex - data.startIndex))
            if result.count == limit { break }
        }
        return result
    }

    static func detect(_ object: [String: Any], path: String, line: Int?) throws -> DataFormat {
        if object["input_ids"] != nil { return .pretokenized }
        if object["messages"] != nil { return .messages }
        if object["prompt"] != nil && object["completion"] != nil { return .promptCompletion }
        if object["instruction"] != nil && object["output"] != nil { return .alpaca }
        throw DataError(path: path, line: line, message: "unrecognised record: expected the keys \(DataFormat.keysDescription), "
                        + "found \(object.keys.sorted().map { "\"\($0)\"" }.joined(separator: ", "))")
    }

    /// The messages of a text record, validated: known roles, string contents, non-empty assistant turns.
    static func conversation(_ object: [String: Any], format: DataFormat, fail: (String) -> DataError) throws -> [ChatMessage] {
        func text(_ value: Any?, _ key: String) throws -> String {
            guard let string = value as? String else { throw fail("\"\(key)\" must be a string, found \(typeName(value))") }
            return string
        }
        var messages: [ChatMessage]
        switch format {
        case .messages:
            messages = try messageList(object["messages"], key: "messages", fail: fail)
        case .promptCompletion:
            let prompt = object["prompt"], completion = object["completion"]
            messages = prompt is String ? [.user(try text(prompt, "prompt"))] : try messageList(prompt, key: "prompt", fail: fail)
            let completionMessages = completion is String
                ? [.assistant(try text(completion, "completion"))] : try messageList(completion, key: "completion", fail: fail)
            if let index = completionMessages.firstIndex(where: { $0.role != .assistant }) {
                throw fail("completion[\(index)].role is \"\(completionMessages[index].role.rawValue)\": a completion holds assistant messages")
            }
            messages += completionMessages
        case .alpaca:
            var user = try text(object["instruction"], "instruction")
            if let input = object["input"], !(input is NSNull) {
                let inputText = try text(input, "input")
                if !inputText.isEmpty { user += "\n" + inputText }
            }
            messages = []
            if let system = object["system"], !(system is NSNull) {
                let systemText = try text(system, "system")
                if !systemText.isEmpty { messages.append(.system(systemText)) }
            }
            messages += [.user(user), .assistant(try text(object["output"], "output"))]
        case .pretokenized:
            preconditionFailure("pre-tokenized records are read by TokenizedDataset")
        }
        for (index, message) in messages.enumerated() where message.role == .assistant {
            if ChatTemplate.pythonStrip(message.content).isEmpty {
                let location = format == .messages ? "messages[\(index)]" : format == .alpaca ? "\"output\"" : "the completion"
                throw fail("\(location) is an empty assistant message: there is nothing to train on")
            }
        }
        return messages
    }

    static func messageList(_ value: Any?, key: String, fail: (String) -> DataError) throws -> [ChatMessage] {
        guard let list = value as? [Any] else { throw fail("\"\(key)\" must be a list of messages, found \(typeName(value))") }
        if list.isEmpty { throw fail("\"\(key)\" is an empty list") }
        return try list.enumerated().map { index, element in
            guard let message = element as? [String: Any] else {
                throw fail("\(key)[\(index)] must be an object {\"role\": …, \"content\": …}, found \(typeName(element))")
            }
            guard let roleName = message["role"] as? String else { throw fail("\(key)[\(index)] has no \"role\" string") }
            guard let role = ChatMessage.Role(rawValue: roleName) else {
                throw fail("\(key)[\(index)].role is \"\(roleName)\": expected \(ChatMessage.Role.allCases.map(\.rawValue).joined(separator: ", "))")
            }
            return ChatMessage(role: role, content: try content(message["content"], "\(key)[\(index)].content", fail: fail))
        }
    }

    /// A message content: a string, or OpenAI's list of parts of which only `{"type": "text", "text": …}` is supported.
    static func content(_ value: Any?, _ location: String, fail: (String) -> DataError) throws -> String {
        if let string = value as? String { return string }
        if let parts = value as? [Any] {
            var text = ""
            for (index, part) in parts.enumerated() {
                guard let object = part as? [String: Any], object["type"] as? String == "text", let partText = object["text"] as? String else {
                    throw fail("\(location)[\(index)]: only text parts {\"type\": \"text\", \"text\": …} are supported")
                }
                text += partText
            }
            return text
        }
        throw fail("\(location) must be a string, found \(typeName(value))")
    }

    static func typeName(_ value: Any?) -> String {
        switch value {
        case nil: "nothing"
        case is NSNull: "null"
        case is String: "a string"
        case is NSNumber: "a number or boolean"
        case is [Any]: "a list"
        case is [String: Any]: "an object"
        default: String(describing: type(of: value as Any))
        }
    }

    static func describe(_ error: Error) -> String {
        let text = (error as NSError).userInfo[NSDebugDescriptionErrorKey] as? String ?? "not valid JSON"
        return text
    }
}

/// A data file parsed: pre-tokenized examples, or validated conversations still to tokenize.
public enum ParsedData: Sendable {
    case pretokenized(LoadedData)
    case text(ParsedChatData)
}

/// The validated conversations of a text data file, in file order, not yet tokenized.
public struct ParsedChatData: Sendable {
    public var path: String
    public var format: DataFormat
    public var numberedByLine: Bool
    /// Bytes of the file (for progress in MB/s).
    public var bytes: Int
    public var conversations: [[ChatMessage]] = []
    /// Line number (JSONL) or array position of each conversation.
    public var recordNumbers: [Int] = []
    /// Byte offset where each record ends (estimated for a JSON array).
    public var recordEnds: [Int] = []

    init(path: String, format: DataFormat, numberedByLine: Bool, bytes: Int) {
        self.path = path
        self.format = format
        self.numberedByLine = numberedByLine
        self.bytes = bytes
    }

    /// Examples of a slice of the conversations.
    public struct Encoded: Sendable {
        public var examples: [SFTExample] = []
        /// Record number of each example.
        public var recordNumbers: [Int] = []
        /// Records skipped for having no supervised token.
        public var skipped: [Int] = []
        public init() {}
    }

    /// Tokenizes the conversations in `range` with `encoder`. A token id at or above `vocabularySize`, or
    /// (with `--strict`) a conversation without a supervised token, is a ``DataError`` naming the record.
    public func encode(_ range: Range<Int>, encoder: ChatEncoder, options: ChatDataOptions, vocabularySize: Int,
                       each: (Int) -> Void = { _ in }) throws -> Encoded {
        var result = Encoded()
        for index in range {
            let number = recordNumbers[index]
            let example = encoder.example(conversations[index], trainOn: options.trainOn)
            func fail(_ message: String) -> DataError {
                DataError(path: path, line: numberedByLine ? number : nil, message: numberedByLine ? message : "record \(number): \(message)")
            }
            if let bad = example.inputIDs.firstIndex(where: { Int($0) >= vocabularySize }) {
                throw fail("token id \(example.inputIDs[bad]) at position \(bad) is outside the model's vocabulary (0..<\(vocabularySize))")
            }
            if example.supervisedCount == 0 {
                if options.strict {
                    throw fail("no supervised token (no assistant turn to train on with --train-on \(options.trainOn.rawValue)); "
                               + "without --strict such records are skipped and counted")
                }
                result.skipped.append(number)
            } else {
                result.examples.append(example)
                result.recordNumbers.append(number)
            }
            each(index)
        }
        return result
    }

    /// The loaded data of the whole file from its encoded slices (in order), with `options.longExamples`
    /// applied to each example longer than `options.sequenceLength` (`split` cuts at the turn boundaries
    /// `encoder` finds in the example's conversation). Every rank computes the same from the same slices.
    public func loaded(_ encoded: Encoded, options: ChatDataOptions, encoder: ChatEncoder) throws -> LoadedData {
        var report = DataLoadReport(path: path, format: format)
        report.numberedByLine = numberedByLine
        report.records = conversations.count
        report.skippedUnsupervised = encoded.skipped
        var examples: [SFTExample] = [], numbers: [Int] = []
        examples.reserveCapacity(encoded.examples.count)
        numbers.reserveCapacity(encoded.examples.count)
        for (example, number) in zip(encoded.examples, encoded.recordNumbers) {
            func fail(_ message: String) -> DataError {
                DataError(path: path, line: numberedByLine ? number : nil, message: numberedByLine ? message : "record \(number): \(message)")
            }
            let pieces = try ChatDataset.applyLongExamplePolicy(example, options: options, report: &report, record: number, fail: fail) {
                // recordNumbers ascend: the conversation of record `number` by binary search.
                var low = 0, high = recordNumbers.count
                while low < high {
                    let middle = (low + high) / 2
                    if recordNumbers[middle] < number { low = middle + 1 } else { high = middle }
                }
                guard low < recordNumbers.count, recordNumbers[low] == number else { return nil }
                return encoder.turnBoundaries(conversations[low], ids: example.inputIDs.map(Int.init))
            }
            examples += pieces
            numbers += [Int](repeating: number, count: pieces.count)
        }
        if examples.isEmpty {
            let dropped = report.long.map { $0.policy == .drop && $0.count > 0 ? ", \($0.count) dropped as longer than --seq-len \($0.sequenceLength)" : "" } ?? ""
            throw DataError(path: path, line: nil, message: "no example has a supervised token (\(report.records) records read\(dropped))")
        }
        return LoadedData(examples: examples, report: report, recordNumbers: numbers)
    }
}
