import Checkpoints
import Foundation
import SystemPackage

#if canImport(Glibc)
import Glibc
#endif

/// What a prepared token file's examples depend on besides the data: the tokenizer, the chat template and
/// `--train-on`. Two runs whose fingerprints are equal make the same examples from the same JSONL.
///
/// Each part is a SHA-256: the tokenizer's of its defining bytes (``ModelIO/TextSetup/fingerprint``), the
/// template's of its name and the renderings of two probe conversations with this tokenizer's special
/// texts (``ChatEncoder/templateFingerprint``). Pre-tokenized data has neither (all-zero digests, no
/// `trainOn`): its labels come from the file.
public struct DataFingerprint: Sendable, Equatable {
    public var tokenizer: [UInt8]
    public var template: [UInt8]
    public var trainOn: TrainOn?

    public init(tokenizer: [UInt8], template: [UInt8], trainOn: TrainOn?) {
        precondition(tokenizer.count == 32 && template.count == 32, "DataFingerprint: digests are 32 bytes")
        self.tokenizer = tokenizer
        self.template = template
        self.trainOn = trainOn
    }

    /// The fingerprint of text data encoded by `encoder` with `trainOn`.
    public init(encoder: ChatEncoder, tokenizerFingerprint: String, trainOn: TrainOn) {
        self.init(tokenizer: Self.bytes(hex: tokenizerFingerprint), template: Self.bytes(hex: encoder.templateFingerprint), trainOn: trainOn)
    }

    /// Pre-tokenized data: labels from the file, no tokenizer or template.
    public static let pretokenized = DataFingerprint(tokenizer: [UInt8](repeating: 0, count: 32),
                                                     template: [UInt8](repeating: 0, count: 32), trainOn: nil)

    public var isPretokenized: Bool { trainOn == nil }

    /// SHA-256 of the tokenizer digest, the template digest and the `--train-on` code: the file's hash.
    public var combined: [UInt8] {
        var hasher = SHA256()
        hasher.update(tokenizer)
        hasher.update(template)
        hasher.update([UInt8(Self.code(trainOn))])
        return hasher.finalize()
    }

    /// 0: labels from the file; 1 assistant; 2 last; 3 all.
    static func code(_ trainOn: TrainOn?) -> UInt32 {
        switch trainOn {
        case nil: 0
        case .assistant: 1
        case .last: 2
        case .all: 3
        }
    }

    static func trainOn(code: UInt32) -> TrainOn?? {
        switch code {
        case 0: .some(nil)
        case 1: .assistant
        case 2: .last
        case 3: .all
        default: nil
        }
    }

    /// `tokenizer 3f2a…, template 9c1d…, --train-on assistant (hash 77e0…)`.
    public var description: String {
        if isPretokenized { return "pre-tokenized data (labels from the file; hash \(SHA256.hex(combined)))" }
        return "tokenizer \(SHA256.hex(tokenizer).prefix(16)), template \(SHA256.hex(template).prefix(16)), "
            + "--train-on \(trainOn?.rawValue ?? "-") (hash \(SHA256.hex(combined)))"
    }

    /// What differs between two fingerprints: "the tokenizer", "the chat template", "--train-on".
    public func differences(from other: DataFingerprint) -> [String] {
        var result: [String] = []
        if tokenizer != other.tokenizer { result.append("the tokenizer") }
        if template != other.template { result.append("the chat template") }
        if trainOn != other.trainOn { result.append("--train-on (\(trainOn?.rawValue ?? "none") vs \(other.trainOn?.rawValue ?? "none"))") }
        return result
    }

    static func bytes(hex: String) -> [UInt8] {
        let digits = Array(hex.utf8)
        func value(_ c: UInt8) -> UInt8 { c >= 97 ? c - 87 : c >= 65 ? c - 55 : c - 48 }
        var out = [UInt8](repeating: 0, count: 32)
        for i in 0..<min(32, digits.count / 2) { out[i] = value(digits[2 * i]) << 4 | value(digits[2 * i + 1]) }
        return out
    }
}

extension ChatEncoder {
    /// SHA-256 (hex) of the template as this tokenizer renders it: its name, the special texts, the ids put
    /// first, and the pieces (text and assistant turn) of two probe conversations. Any change to how text
    /// is laid out or which part is trained changes it.
    public var templateFingerprint: String {
        var hasher = SHA256()
        hasher.update(field: template.name)
        hasher.update(field: "\(prefixIDs)")
        let probes: [[ChatMessage]] = [
            [.system("S"), .user("U1"), .assistant("A1"), .user("U2"), .assistant("A2")],
            [.user(" u "), .assistant(" a ")],
        ]
        for probe in probes {
            for piece in render(probe).pieces {
                hasher.update(field: piece.text)
                hasher.update(field: piece.assistantTurn.map(String.init) ?? "-")
            }
        }
        return SHA256.hex(hasher.finalize())
    }
}

/// A prepared file that cannot be used: truncated, corrupt, of another version, or stale.
public struct PreparedFileError: Error, CustomStringConvertible, Sendable {
    public var path: String
    public var message: String
    public init(path: String, message: String) {
        self.path = path
        self.message = message
    }
    public var description: String { "\(path): \(message)" }
}

/// The binary layout of a prepared token file (docs/formats.md, "Prepared token files").
///
/// A 512-byte header, then sections each aligned to 64 bytes: token ids (u16 when the vocabulary has at
/// most 65,536 ids, else u32), the label mask (bit `t % 8` of byte `t / 8`: label of token `t` is its id),
/// the offsets index (`E + 1` × u64 token offsets), supervised counts (`E` × u32), source record numbers
/// (`E` × u32), explicit labels (`T` × i32, only when flag bit 0 is set: pre-tokenized labels that are
/// neither -100 nor the token's id), and a JSON metadata object. All integers little-endian.
enum PreparedFormat {
    static let magic: [UInt8] = Array("ZSFTTOKS".utf8)
    static let version: UInt32 = 1
    static let headerSize = 512
    static let alignment = 64
    static let explicitLabelsFlag: UInt32 = 1

    enum Section: Int, CaseIterable {
        case tokens, mask, offsets, supervised, records, labels, metadata
        var name: String { ["tokens", "label mask", "offsets", "supervised counts", "record numbers", "labels", "metadata"][rawValue] }
    }

    // Header field offsets.
    static let versionOffset = 8, widthOffset = 12, examplesOffset = 16, tokensOffset = 24, vocabularyOffset = 32
    static let flagsOffset = 40, trainOnOffset = 44, supervisedOffset = 48, fileSizeOffset = 56
    static let tokenizerDigestOffset = 64, templateDigestOffset = 96, combinedDigestOffset = 128, sectionTableOffset = 160

    static func tokenWidth(vocabularySize: Int) -> Int { vocabularySize <= 65536 ? 2 : 4 }
    static func aligned(_ offset: Int) -> Int { (offset + alignment - 1) / alignment * alignment }
}

/// A memory-mapped prepared token file (`zero-sft prepare`): the examples of a data file, tokenized once.
///
/// Every rank maps the same file read-only, so the page cache holds one copy per host whatever the rank
/// count; a rank's own memory for the data is the plan's per-example arrays. ``length(_:)`` and
/// ``supervisedCount(_:)`` read the index only; ``example(_:)`` decodes one example's ids and labels.
/// Opening checks the whole file (sizes, offsets, every id below the vocabulary size, every supervised
/// count against the mask), so a truncated or corrupt file is an error naming it before any rank starts.
public final class PreparedFile: ExampleSource, @unchecked Sendable {
    public let path: String
    public let count: Int
    public let tokenCount: Int
    public let vocabularySize: Int
    public let tokenWidth: Int
    public let supervisedTotal: Int
    public let fingerprint: DataFingerprint
    /// What the file was prepared from (``DataLoadReport``), and the metadata's template name.
    public let report: DataLoadReport
    public let templateName: String?
    private let file: MappedFile
    private let sections: [Range<Int>]
    private let hasExplicitLabels: Bool

    /// Whether `path` starts with the prepared-file magic (reads 8 bytes; any name or extension).
    public static func isPrepared(path: String) -> Bool {
        (try? MappedFile.starts(with: PreparedFormat.magic, path: path)) ?? false
    }

    public init(path: String) throws {
        self.path = path
        do { file = try MappedFile(path: path) } catch {
            throw PreparedFileError(path: path, message: "cannot map the prepared file: \(error)")
        }
        func fail(_ message: String) -> PreparedFileError { PreparedFileError(path: path, message: message) }
        let size = file.count
        guard size >= PreparedFormat.headerSize else {
            throw fail("not a prepared token file, or truncated (\(size) bytes; expected the magic ZSFTTOKS and a \(PreparedFormat.headerSize)-byte header)")
        }
        // The header, copied (512 bytes) and read field by field.
        let head: [UInt8] = file.withUnsafeBytes { Array($0[0..<PreparedFormat.headerSize]) }
        guard Array(head[0..<8]) == PreparedFormat.magic else { throw fail("not a prepared token file (no ZSFTTOKS magic)") }
        func u32(_ at: Int) -> UInt32 { head[at..<(at + 4)].reversed().reduce(0) { $0 << 8 | UInt32($1) } }
        func u64(_ at: Int) -> Int { Int(truncatingIfNeeded: head[at..<(at + 8)].reversed().reduce(UInt64(0)) { $0 << 8 | UInt64($1) }) }
        let version = u32(PreparedFormat.versionOffset)
        guard version == PreparedFormat.version else {
            throw fail("prepared-file version \(version); this zero-sft reads version \(PreparedFormat.version): prepare the data again")
        }
        var sectionRanges: [Range<Int>] = []
        for index in PreparedFormat.Section.allCases.indices {
            let start = u64(PreparedFormat.sectionTableOffset + 16 * index), length = u64(PreparedFormat.sectionTableOffset + 16 * index + 8)
            guard start >= PreparedFormat.headerSize, length >= 0, start <= size, length <= size - start else {
                throw fail("corrupt or truncated: section \(PreparedFormat.Section.allCases[index].name) at \(start) + \(length) bytes lies outside the file (\(size) bytes)")
            }
            sectionRanges.append(start..<(start + length))
        }
        let parsed = (header: [Int(u32(PreparedFormat.widthOffset)), 0, u64(PreparedFormat.examplesOffset), u64(PreparedFormat.tokensOffset),
                               u64(PreparedFormat.vocabularyOffset), u64(PreparedFormat.supervisedOffset), u64(PreparedFormat.fileSizeOffset)],
                      flags: u32(PreparedFormat.flagsOffset), trainOn: u32(PreparedFormat.trainOnOffset),
                      digests: [PreparedFormat.tokenizerDigestOffset, PreparedFormat.templateDigestOffset, PreparedFormat.combinedDigestOffset]
                          .map { Array(head[$0..<($0 + 32)]) },
                      sections: sectionRanges)
        let width = parsed.header[0], examples = parsed.header[2], tokens = parsed.header[3], vocabulary = parsed.header[4]
        guard parsed.header[6] == size else {
            throw fail("truncated or extended: the header records \(parsed.header[6]) bytes, the file has \(size)")
        }
        guard width == 2 || width == 4, examples >= 1, tokens >= 0, vocabulary >= 1, width == PreparedFormat.tokenWidth(vocabularySize: vocabulary) else {
            throw fail("corrupt header: token width \(width), \(examples) examples, \(tokens) tokens, vocabulary \(vocabulary)")
        }
        guard let trainOn = DataFingerprint.trainOn(code: parsed.trainOn) else { throw fail("corrupt header: train-on code \(parsed.trainOn)") }
        let fingerprint = DataFingerprint(tokenizer: parsed.digests[0], template: parsed.digests[1], trainOn: trainOn)
        guard fingerprint.combined == parsed.digests[2] else { throw fail("corrupt header: the hash does not match the tokenizer, template and train-on it records") }
        hasExplicitLabels = parsed.flags & PreparedFormat.explicitLabelsFlag != 0
        let expected: [PreparedFormat.Section: Int] = [
            .tokens: tokens * width, .mask: (tokens + 7) / 8, .offsets: (examples + 1) * 8, .supervised: examples * 4,
            .records: examples * 4, .labels: hasExplicitLabels ? tokens * 4 : 0,
        ]
        for (section, bytes) in expected where parsed.sections[section.rawValue].count != bytes {
            throw fail("corrupt: section \(section.name) has \(parsed.sections[section.rawValue].count) bytes, expected \(bytes)")
        }
        self.count = examples
        self.tokenCount = tokens
        self.vocabularySize = vocabulary
        self.tokenWidth = width
        self.supervisedTotal = parsed.header[5]
        self.fingerprint = fingerprint
        self.sections = parsed.sections
        let metadataRange = parsed.sections[PreparedFormat.Section.metadata.rawValue]
        let metadata = file.withUnsafeBytes { Data($0[metadataRange]) }
        guard let object = (try? JSONSerialization.jsonObject(with: metadata)) as? [String: Any] else {
            throw fail("corrupt: the metadata section is not a JSON object")
        }
        var report = DataLoadReport(path: object["source"] as? String ?? path,
                                    format: (object["format"] as? String).flatMap(DataFormat.init(rawValue:)) ?? .pretokenized)
        report.records = object["records"] as? Int ?? examples
        report.skippedUnsupervised = object["skipped_unsupervised"] as? [Int] ?? []
        report.numberedByLine = object["numbered_by_line"] as? Bool ?? true
        self.report = report
        self.templateName = object["template"] as? String
        try validateContents()
    }

    /// Checks offsets, ids and supervised counts (one pass over the tokens and the mask).
    private func validateContents() throws {
        func fail(_ message: String) -> PreparedFileError { PreparedFileError(path: path, message: "corrupt: \(message)") }
        var supervisedSum = 0
        for index in 0..<count {
            let start = offset(index), end = offset(index + 1)
            guard start <= end, end <= tokenCount, index > 0 || start == 0 else {
                throw fail("offsets index entry \(index) is \(start)..<\(end) (\(tokenCount) tokens)")
            }
            let supervised = supervisedCount(index)
            let counted = countSupervised(start..<end)
            guard supervised == counted else {
                throw fail("example \(index) records \(supervised) supervised tokens, its labels have \(counted)")
            }
            supervisedSum += supervised
        }
        guard offset(count) == tokenCount else { throw fail("the offsets index ends at \(offset(count)), the file has \(tokenCount) tokens") }
        guard supervisedSum == supervisedTotal else { throw fail("supervised counts sum to \(supervisedSum), the header records \(supervisedTotal)") }
        let vocabulary = vocabularySize
        let tokens = sections[PreparedFormat.Section.tokens.rawValue]
        let badID: (position: Int, id: Int)? = file.withUnsafeBytes { bytes in
            if tokenWidth == 2 {
                let ids = UnsafeRawBufferPointer(rebasing: bytes[tokens]).assumingMemoryBound(to: UInt16.self)
                var largest: UInt16 = 0
                for id in ids { largest = max(largest, UInt16(littleEndian: id)) }
                if Int(largest) < vocabulary { return nil }
                let position = ids.firstIndex { Int(UInt16(littleEndian: $0)) >= vocabulary }!
                return (position, Int(UInt16(littleEndian: ids[position])))
            }
            let ids = UnsafeRawBufferPointer(rebasing: bytes[tokens]).assumingMemoryBound(to: UInt32.self)
            guard let position = ids.firstIndex(where: { Int(UInt32(littleEndian: $0)) >= vocabulary }) else { return nil }
            return (position, Int(UInt32(littleEndian: ids[position])))
        }
        if let badID { throw fail("token \(badID.position) has id \(badID.id), outside the vocabulary (0..<\(vocabulary))") }
        if hasExplicitLabels {
            let labels = sections[PreparedFormat.Section.labels.rawValue]
            let bad: Int? = file.withUnsafeBytes { bytes in
                let values = UnsafeRawBufferPointer(rebasing: bytes[labels]).assumingMemoryBound(to: Int32.self)
                return values.firstIndex { let v = Int(Int32(littleEndian: $0)); return v != -100 && (v < 0 || v >= vocabulary) }
            }
            if let bad { throw fail("label \(bad) is neither -100 nor a token id (0..<\(vocabulary))") }
        }
    }

    /// Token offset of example `index` (index `count`: the total).
    func offset(_ index: Int) -> Int {
        let at = sections[PreparedFormat.Section.offsets.rawValue].lowerBound + 8 * index
        return file.withUnsafeBytes { Int(truncatingIfNeeded: UInt64(littleEndian: $0.loadUnaligned(fromByteOffset: at, as: UInt64.self))) }
    }

    func u32(_ section: PreparedFormat.Section, _ index: Int) -> Int {
        let at = sections[section.rawValue].lowerBound + 4 * index
        return file.withUnsafeBytes { Int(UInt32(littleEndian: $0.loadUnaligned(fromByteOffset: at, as: UInt32.self))) }
    }

    /// Set mask bits (labels not -100) among positions `range` except its first, or explicit labels not -100.
    private func countSupervised(_ range: Range<Int>) -> Int {
        guard range.count > 1 else { return 0 }
        let trained = (range.lowerBound + 1)..<range.upperBound
        if hasExplicitLabels {
            let base = sections[PreparedFormat.Section.labels.rawValue].lowerBound
            return file.withUnsafeBytes { bytes in
                trained.reduce(0) { $0 + (Int32(littleEndian: bytes.loadUnaligned(fromByteOffset: base + 4 * $1, as: Int32.self)) == -100 ? 0 : 1) }
            }
        }
        let base = sections[PreparedFormat.Section.mask.rawValue].lowerBound
        return file.withUnsafeBytes { bytes in
            var total = 0
            for t in trained where bytes[base + t >> 3] & (1 << UInt8(t & 7)) != 0 { total += 1 }
            return total
        }
    }

    public func length(_ index: Int) -> Int { offset(index + 1) - offset(index) }
    public func supervisedCount(_ index: Int) -> Int { u32(.supervised, index) }
    /// The line (JSONL) or array position (JSON) example `index` came from.
    public func recordNumber(_ index: Int) -> Int { u32(.records, index) }

    public func example(_ index: Int) -> SFTExample {
        let start = offset(index), end = offset(index + 1)
        let tokens = sections[PreparedFormat.Section.tokens.rawValue].lowerBound
        let mask = sections[PreparedFormat.Section.mask.rawValue].lowerBound
        let labelsBase = sections[PreparedFormat.Section.labels.rawValue].lowerBound
        let width = tokenWidth, explicit = hasExplicitLabels
        return file.withUnsafeBytes { bytes in
            var ids = [Int32](repeating: 0, count: end - start)
            var labels = [Int32](repeating: -100, count: end - start)
            for t in start..<end {
                let id = width == 2
                    ? Int32(UInt16(littleEndian: bytes.loadUnaligned(fromByteOffset: tokens + 2 * t, as: UInt16.self)))
                    : Int32(bitPattern: UInt32(littleEndian: bytes.loadUnaligned(fromByteOffset: tokens + 4 * t, as: UInt32.self)))
                ids[t - start] = id
                if explicit {
                    labels[t - start] = Int32(littleEndian: bytes.loadUnaligned(fromByteOffset: labelsBase + 4 * t, as: Int32.self))
                } else if bytes[mask + t >> 3] & (1 << UInt8(t & 7)) != 0 {
                    labels[t - start] = id
                }
            }
            return SFTExample(inputIDs: ids, labels: labels)
        }
    }

    /// Bytes of the mapping (shared by every process that maps the file: the page cache's one copy).
    public var mappedBytes: Int { file.count }

    /// Every example in memory with its record number, for `inspect-data` (a single-process tool).
    public func loadedData() -> LoadedData {
        LoadedData(examples: (0..<count).map(example), report: report, recordNumbers: (0..<count).map(recordNumber))
    }

    /// Refuses the file when it was prepared with another tokenizer, template or `--train-on` than `run`
    /// (nil: the run has no text setup, e.g. a preset model, which can read pre-tokenized data only).
    /// Pre-tokenized files carry their own labels and match any run. The error names both hashes and what differs.
    public func check(against run: DataFingerprint?, modelVocabularySize: Int) throws {
        if vocabularySize > modelVocabularySize {
            throw PreparedFileError(path: path, message: "prepared for a vocabulary of \(vocabularySize) ids; the model has \(modelVocabularySize)")
        }
        guard !fingerprint.isPretokenized else { return }
        guard let run else {
            throw PreparedFileError(path: path, message: "prepared from text with \(fingerprint.description); this model has no tokenizer to check it against")
        }
        let differences = fingerprint.differences(from: run)
        guard differences.isEmpty else {
            throw PreparedFileError(path: path, message: "stale: prepared with \(fingerprint.description); this run has \(run.description): "
                                    + "\(differences.joined(separator: " and ")) differ\(differences.count == 1 ? "s" : ""). "
                                    + "Prepare it again (zero-sft prepare) or run with the options it was prepared with")
        }
    }
}

/// Writes a prepared token file atomically: a temporary file next to the target, synced, then renamed.
///
/// Tokens stream to disk as examples are added; the mask (1 bit per token) and the per-example index are
/// kept in memory until ``finish(metadata:)``. The corresponding C functions are `open`, `pwrite`, `fsync`
/// and `rename` (through swift-system's `FileDescriptor` where it has them).
public final class PreparedFileWriter {
    public let path: String
    let temporaryPath: String
    let vocabularySize: Int
    let tokenWidth: Int
    let fingerprint: DataFingerprint
    let explicitLabels: Bool
    private var descriptor: FileDescriptor?
    private var buffer: [UInt8] = []
    private var written = PreparedFormat.headerSize
    private var mask: [UInt8] = []
    private var offsets: [UInt64] = [0]
    private var supervised: [UInt32] = []
    private var records: [UInt32] = []
    private var labels: [Int32] = []
    private var tokenCount = 0
    private var supervisedTotal = 0

    /// `explicitLabels`: store labels as i32 (pre-tokenized data whose labels may differ from the ids).
    public init(path: String, vocabularySize: Int, fingerprint: DataFingerprint, explicitLabels: Bool = false) throws {
        self.path = path
        self.temporaryPath = path + ".tmp-\(getpid())"
        self.vocabularySize = vocabularySize
        self.tokenWidth = PreparedFormat.tokenWidth(vocabularySize: vocabularySize)
        self.fingerprint = fingerprint
        self.explicitLabels = explicitLabels
        do {
            descriptor = try FileDescriptor.open(FilePath(temporaryPath), .writeOnly, options: [.create, .truncate, .closeOnExec],
                                                 permissions: [.ownerReadWrite, .groupRead, .otherRead])
        } catch {
            throw FileOperationError(path: temporaryPath, operation: "create", reason: "\(error)")
        }
        buffer.reserveCapacity(1 << 20)
        buffer += [UInt8](repeating: 0, count: PreparedFormat.headerSize)
        written = 0
    }

    deinit {
        if let descriptor {
            try? descriptor.close()
            unlink(temporaryPath)
        }
    }

    /// Appends one example (ids below the vocabulary size; labels -100 or, unless `explicitLabels`, the id).
    public func append(_ example: SFTExample, record: Int) throws {
        for (t, id) in example.inputIDs.enumerated() {
            precondition(id >= 0 && Int(id) < vocabularySize, "PreparedFileWriter: id \(id) outside the vocabulary")
            if tokenWidth == 2 {
                let value = UInt16(id)
                buffer.append(UInt8(truncatingIfNeeded: value)); buffer.append(UInt8(truncatingIfNeeded: value >> 8))
            } else {
                let value = UInt32(id)
                for shift in [0, 8, 16, 24] as [UInt32] { buffer.append(UInt8(truncatingIfNeeded: value >> shift)) }
            }
            let position = tokenCount + t
            if position >> 3 >= mask.count { mask.append(0) }
            let label = example.labels[t]
            if explicitLabels {
                labels.append(label)
            } else {
                precondition(label == -100 || label == id, "PreparedFileWriter: a label that is neither -100 nor the id needs explicitLabels")
            }
            if label != -100 { mask[position >> 3] |= 1 << UInt8(position & 7) }
        }
        tokenCount += example.count
        offsets.append(UInt64(tokenCount))
        supervised.append(UInt32(example.supervisedCount))
        supervisedTotal += example.supervisedCount
        records.append(UInt32(clamping: record))
        if buffer.count >= 1 << 20 { try flush() }
    }

    private func flush() throws {
        guard let descriptor, !buffer.isEmpty else { return }
        do {
            let count = try buffer.withUnsafeBytes { try descriptor.writeAll(toAbsoluteOffset: Int64(written), $0) }
            written += count
        } catch {
            throw FileOperationError(path: temporaryPath, operation: "write", reason: "\(error)")
        }
        buffer.removeAll(keepingCapacity: true)
    }

    private func pad() { while (written + buffer.count) % PreparedFormat.alignment != 0 { buffer.append(0) } }

    private func appendSection<T: FixedWidthInteger>(_ values: [T]) -> Range<Int> {
        pad()
        let start = written + buffer.count
        for value in values { withUnsafeBytes(of: value.littleEndian) { buffer.append(contentsOf: $0) } }
        return start..<(written + buffer.count)
    }

    /// Writes the index, mask and metadata and the header, syncs, and renames the file into place.
    /// `metadata` is a JSON-serialisable object (``PreparedFile/report`` is read back from it).
    public func finish(metadata: [String: Any]) throws {
        let tokensRange = PreparedFormat.headerSize..<(PreparedFormat.headerSize + tokenCount * tokenWidth)
        var sections = [Range<Int>](repeating: 0..<0, count: PreparedFormat.Section.allCases.count)
        sections[PreparedFormat.Section.tokens.rawValue] = tokensRange
        sections[PreparedFormat.Section.mask.rawValue] = appendSection(mask)
        sections[PreparedFormat.Section.offsets.rawValue] = appendSection(offsets)
        sections[PreparedFormat.Section.supervised.rawValue] = appendSection(supervised)
        sections[PreparedFormat.Section.records.rawValue] = appendSection(records)
        sections[PreparedFormat.Section.labels.rawValue] = appendSection(labels)
        let json = try JSONSerialization.data(withJSONObject: metadata, options: [.sortedKeys])
        sections[PreparedFormat.Section.metadata.rawValue] = appendSection(Array(json))
        let fileSize = written + buffer.count
        try flush()
        // The header, last: a file cut short before here has no valid header.
        var header = [UInt8](repeating: 0, count: PreparedFormat.headerSize)
        func put<T: FixedWidthInteger>(_ value: T, at offset: Int) {
            withUnsafeBytes(of: value.littleEndian) { header.replaceSubrange(offset..<(offset + $0.count), with: $0) }
        }
        header.replaceSubrange(0..<8, with: PreparedFormat.magic)
        put(PreparedFormat.version, at: PreparedFormat.versionOffset)
        put(UInt32(tokenWidth), at: PreparedFormat.widthOffset)
        put(UInt64(offsets.count - 1), at: PreparedFormat.examplesOffset)
        put(UInt64(tokenCount), at: PreparedFormat.tokensOffset)
        put(UInt64(vocabularySize), at: PreparedFormat.vocabularyOffset)
        put(explicitLabels ? PreparedFormat.explicitLabelsFlag : 0, at: PreparedFormat.flagsOffset)
        put(DataFingerprint.code(fingerprint.trainOn), at: PreparedFormat.trainOnOffset)
        put(UInt64(supervisedTotal), at: PreparedFormat.supervisedOffset)
        put(UInt64(fileSize), at: PreparedFormat.fileSizeOffset)
        header.replaceSubrange(PreparedFormat.tokenizerDigestOffset..<(PreparedFormat.tokenizerDigestOffset + 32), with: fingerprint.tokenizer)
        header.replaceSubrange(PreparedFormat.templateDigestOffset..<(PreparedFormat.templateDigestOffset + 32), with: fingerprint.template)
        header.replaceSubrange(PreparedFormat.combinedDigestOffset..<(PreparedFormat.combinedDigestOffset + 32), with: fingerprint.combined)
        for (index, range) in sections.enumerated() {
            put(UInt64(range.lowerBound), at: PreparedFormat.sectionTableOffset + 16 * index)
            put(UInt64(range.count), at: PreparedFormat.sectionTableOffset + 16 * index + 8)
        }
        guard let descriptor else { return }
        do {
            _ = try header.withUnsafeBytes { try descriptor.writeAll(toAbsoluteOffset: 0, $0) }
            guard fsync(descriptor.rawValue) == 0 else { throw Errno(rawValue: errno) }
            try descriptor.close()
            self.descriptor = nil
        } catch {
            throw FileOperationError(path: temporaryPath, operation: "write and sync", reason: "\(error)")
        }
        guard rename(temporaryPath, path) == 0 else {
            let code = errno
            unlink(temporaryPath)
            throw FileOperationError(path: path, operation: "rename \(temporaryPath) to", reason: "\(String(cString: strerror(code))) (errno \(code))")
        }
        // The rename itself is durable once the directory is synced.
        let directory = (path as NSString).deletingLastPathComponent
        if let folder = try? FileDescriptor.open(FilePath(directory.isEmpty ? "." : directory), .readOnly) {
            _ = fsync(folder.rawValue)
            try? folder.close()
        }
    }

    public var examples: Int { offsets.count - 1 }
    public var tokens: Int { tokenCount }
}
