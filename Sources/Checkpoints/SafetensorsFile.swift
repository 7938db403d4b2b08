import Foundation

/// A safetensors file (HF's format): an 8-byte little-endian header length, a JSON header, then data.
///
/// The file is memory-mapped; a ranged read touches only the pages holding the requested elements.
/// Readable dtypes: F32, F16, BF16, F64, I64, I32, I16, I8, U8, BOOL (all converted to Float).
public struct SafetensorsFile: TensorSource, Sendable {
    /// The file's location.
    public let url: URL
    /// The header's `__metadata__` map (empty if absent).
    public let metadata: [String: String]
    /// Every tensor, by name.
    public let tensors: [String: TensorInfo]
    /// Tensor names in the order of their data in the file.
    public let tensorNames: [String]
    /// The absolute file offset of the data region (8 + header length).
    public let dataOffset: Int

    private let table: MappedTensors

    public var location: String { url.path }

    /// Maps the file and validates its header: the header lies within the file, every dtype is
    /// readable, every tensor's `data_offsets` lie within the data region and span exactly
    /// shape × dtype bytes, and no two tensors overlap.
    /// Throws `CheckpointError` (`.truncated`, `.badMagic`, `.malformedHeader`, `.unsupportedDType`,
    /// `.inconsistentTensor`, `.overlappingTensors`).
    public init(url: URL) throws {
        let path = url.path
        let file = try MappedFile(path: path)
        guard file.count >= 8 else {
            throw CheckpointError(.truncated, path: path, expected: "at least 8 bytes (the header length)",
                                  found: "a file of \(file.count) bytes")
        }
        if file.bytes.starts(with: [0x47, 0x47, 0x55, 0x46]) {
            throw CheckpointError(.badMagic, path: path, expected: "a safetensors file", found: "a GGUF file (magic 'GGUF')")
        }
        let headerLength = UInt64(littleEndian: file.bytes.loadUnaligned(as: UInt64.self))
        guard headerLength <= UInt64(file.count - 8) else {
            throw CheckpointError(.truncated, path: path,
                                  expected: "a header of \(headerLength) bytes (the header length in the first 8 bytes) after the length field",
                                  found: "a file of \(file.count) bytes")
        }
        let headerBytes = UnsafeRawBufferPointer(rebasing: file.bytes[8..<(8 + Int(headerLength))])
        guard headerBytes.first == UInt8(ascii: "{") else {
            throw CheckpointError(.badMagic, path: path, expected: "a JSON object header starting with '{' at byte 8",
                                  found: describeBytes(headerBytes))
        }
        let header: SafetensorsHeader
        do {
            let data = Data(bytesNoCopy: UnsafeMutableRawPointer(mutating: headerBytes.baseAddress!),
                            count: headerBytes.count, deallocator: .none)
            header = try JSONDecoder().decode(SafetensorsHeader.self, from: data)
        } catch let error as DecodingError {
            throw CheckpointError.fromDecodingError(error, path: path)
        }

        let dataOffset = 8 + Int(headerLength)
        let dataSize = file.count - dataOffset
        var entries: [String: MappedTensors.Entry] = [:]
        entries.reserveCapacity(header.tensors.count)
        for (name, raw) in header.tensors {
            guard let dtype = TensorDType(safetensorsName: raw.dtype) else {
                throw CheckpointError(.unsupportedDType, path: path, tensor: name,
                                      expected: "one of F32, F16, BF16, F64, I64, I32, I16, I8, U8, BOOL",
                                      found: "'\(raw.dtype)'")
            }
            guard raw.shape.allSatisfy({ $0 >= 0 }) else {
                throw CheckpointError(.malformedHeader, path: path, tensor: name,
                                      expected: "non-negative dimensions", found: "shape \(raw.shape)")
            }
            var elementCount = 1
            for extent in raw.shape {
                let (product, overflow) = elementCount.multipliedReportingOverflow(by: extent)
                guard !overflow else {
                    throw CheckpointError(.malformedHeader, path: path, tensor: name,
                                          expected: "an element count below 2^63", found: "shape \(raw.shape)")
                }
                elementCount = product
            }
            guard raw.dataOffsets.count == 2, raw.dataOffsets[0] >= 0, raw.dataOffsets[0] <= raw.dataOffsets[1] else {
                throw CheckpointError(.malformedHeader, path: path, tensor: name,
                                      expected: "data_offsets [begin, end] with 0 ≤ begin ≤ end", found: "\(raw.dataOffsets)")
            }
            let begin = raw.dataOffsets[0], end = raw.dataOffsets[1]
            guard end <= dataSize else {
                throw CheckpointError(.truncated, path: path, tensor: name,
                                      expected: "data_offsets [\(begin), \(end)] within the data region of \(dataSize) bytes",
                                      found: "a file of \(file.count) bytes (data region starts at byte \(dataOffset))")
            }
            guard let byteCount = dtype.byteCount(elementCount: elementCount), byteCount == end - begin else {
                throw CheckpointError(.inconsistentTensor, path: path, tensor: name,
                                      expected: "\(elementCount) × \(dtype.bytesPerBlock) bytes for shape \(raw.shape) of \(raw.dtype)",
                                      found: "data_offsets [\(begin), \(end)] spanning \(end - begin) bytes")
            }
            let info = TensorInfo(name: name, shape: raw.shape, dtype: dtype)
            entries[name] = .init(info: info, offset: dataOffset + begin, byteCount: byteCount)
        }
        try MappedTensors.checkNoOverlap(entries.values, path: path)

        self.url = url
        self.metadata = header.metadata
        self.dataOffset = dataOffset
        self.tensorNames = entries.values.sorted { ($0.offset, $0.info.name) < ($1.offset, $1.info.name) }.map(\.info.name)
        self.table = MappedTensors(file: file, entries: entries)
        self.tensors = table.infos
    }

    /// The absolute byte range of tensor `name`'s data in the file, or nil if there is no such tensor.
    public func byteRange(of name: String) -> Range<Int>? { table.byteRange(of: name) }

    public func read(_ name: String, elements: Range<Int>, into destination: UnsafeMutableBufferPointer<Float>) throws {
        try table.read(name, elements: elements, into: destination)
    }
}

/// The JSON header of a safetensors file: `{"__metadata__": {…}, "<name>": {"dtype", "shape", "data_offsets"}, …}`.
struct SafetensorsHeader: Decodable {
    struct Entry: Decodable {
        var dtype: String
        var shape: [Int]
        var dataOffsets: [Int]
        enum CodingKeys: String, CodingKey {
            case dtype, shape
            case dataOffsets = "data_offsets"
        }
    }

    var metadata: [String: String] = [:]
    var tensors: [(name: String, entry: Entry)] = []

    init(from decoder: Decoder) throws {
        let container = try decoder.container(keyedBy: NameKey.self)
        for key in container.allKeys {
            if key.stringValue == "__metadata__" {
                metadata = try container.decode([String: String].self, forKey: key)
            } else {
                tensors.append((key.stringValue, try container.decode(Entry.self, forKey: key)))
            }
        }
    }
}

/// A coding key for arbitrary JSON object keys (tensor names).
struct NameKey: CodingKey {
    var stringValue: String
    var intValue: Int? { nil }
    init(stringValue: String) { self.stringValue = stringValue }
    init?(intValue: Int) { nil }
}

extension CheckpointError {
    /// Converts a JSON decoding failure into a `.malformedHeader` error naming the tensor (the first path component).
    public static func fromDecodingError(_ error: DecodingError, path: String) -> CheckpointError {
        let context: DecodingError.Context
        let expected: String
        switch error {
        case .typeMismatch(let type, let c): context = c; expected = jsonKind(type)
        case .valueNotFound(let type, let c): context = c; expected = jsonKind(type)
        case .keyNotFound(let key, let c): context = c; expected = "a key '\(key.stringValue)'"
        case .dataCorrupted(let c): context = c; expected = "a valid JSON header"
        @unknown default: return CheckpointError(.malformedHeader, path: path, found: "\(error)")
        }
        func jsonKind(_ type: Any.Type) -> String {
            switch type {
            case is String.Type: "a JSON string"
            case is Int.Type: "an integer"
            case is Double.Type: "a number"
            case is Bool.Type: "a boolean"
            default:
                String(describing: type).hasPrefix("Array") ? "a JSON array"
                    : String(describing: type).hasPrefix("Dictionary") ? "a JSON object" : "a value of type \(type)"
            }
        }
        let components = context.codingPath.map { $0.intValue.map(String.init) ?? $0.stringValue }
        let tensor = components.first.flatMap { $0 == "__metadata__" || $0 == "weight_map" ? nil : $0 }
        let location = components.isEmpty ? "" : " at \(components.joined(separator: "."))"
        var detail = context.debugDescription
        if let underlying = context.underlyingError { detail += " (\(underlying))" }
        return CheckpointError(.malformedHeader, path: path, tensor: tensor, expected: expected + location, found: detail)
    }
}
