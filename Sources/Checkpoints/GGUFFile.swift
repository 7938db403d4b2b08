import Foundation

/// A GGUF file (llama.cpp's format, versions 2 and 3): metadata and tensors, memory-mapped.
///
/// Shapes are reported in HF order (ggml's `ne[]` reversed), and the row-major flattening of that
/// shape is the order of the elements in the file, so element ranges address the file directly.
/// Block-quantised tensors are dequantised exactly as ggml does (see `docs/formats.md`).
///
/// Model knowledge is deliberately absent: llama.cpp's converter permutes the rows of the Llama
/// `attn_q`/`attn_k` weights (interleaved vs half-split RoPE pairs); this type returns the rows as
/// stored, and undoing that permutation is the model loader's job.
public struct GGUFFile: TensorSource, Sendable {
    /// The file's location.
    public let url: URL
    /// The GGUF format version (2 or 3).
    public let version: Int
    /// Every metadata key-value pair of the file.
    public let metadata: [String: GGUFValue]
    /// Metadata keys in file order.
    public let metadataKeys: [String]
    /// Every tensor, by name.
    public let tensors: [String: TensorInfo]
    /// Tensor names in file order.
    public let tensorNames: [String]
    /// The data alignment in bytes (`general.alignment`, default 32).
    public let alignment: Int
    /// The absolute file offset of the tensor data section.
    public let dataOffset: Int

    private let table: MappedTensors

    /// The model architecture (`general.architecture`, e.g. `"llama"`), if present.
    public var architecture: String? { metadata["general.architecture"]?.string }

    public var location: String { url.path }

    /// The magic that opens every GGUF file: the bytes `GGUF`, read as a little-endian UInt32.
    static let magic: UInt32 = 0x4655_4747
    /// ggml's `GGML_MAX_DIMS`.
    static let maximumDimensions = 4

    /// Maps and parses the file, validating the header and every tensor's extent.
    /// Throws `CheckpointError` (`.badMagic`, `.unsupportedVersion`, `.truncated`, `.malformedHeader`,
    /// `.unsupportedDType`, `.inconsistentTensor`, `.overlappingTensors`, `.duplicateTensor`).
    public init(url: URL) throws {
        let file = try MappedFile(path: url.path)
        let path = url.path
        var cursor = ByteCursor(bytes: file.bytes, path: path)

        guard file.count >= 4 else {
            throw CheckpointError(.badMagic, path: path, expected: "GGUF magic 'GGUF'", found: describeBytes(file.bytes))
        }
        let magic = try cursor.load(UInt32.self, "the magic")
        guard magic == Self.magic else {
            throw CheckpointError(.badMagic, path: path, expected: "GGUF magic 'GGUF'",
                                  found: describeBytes(UnsafeRawBufferPointer(rebasing: file.bytes[0..<4])))
        }
        let rawVersion = try cursor.load(UInt32.self, "the version")
        guard rawVersion == 2 || rawVersion == 3 else {
            if rawVersion & 0xFFFF == 0, (1...3).contains(rawVersion.byteSwapped) {
                throw CheckpointError(.unsupportedVersion, path: path, expected: "a little-endian GGUF file (version 2 or 3)",
                                      found: "a big-endian GGUF file (version \(rawVersion.byteSwapped))")
            }
            throw CheckpointError(.unsupportedVersion, path: path, expected: "GGUF version 2 or 3", found: "version \(rawVersion)")
        }
        version = Int(rawVersion)

        // Counts are checked against the bytes left, so garbage cannot trigger huge allocations.
        let tensorCount = try cursor.count(minimumBytesEach: 24, "tensor count")
        let metadataCount = try cursor.count(minimumBytesEach: 13, "metadata key-value count")

        var metadata: [String: GGUFValue] = [:]
        var metadataKeys: [String] = []
        metadata.reserveCapacity(metadataCount)
        metadataKeys.reserveCapacity(metadataCount)
        for index in 0..<metadataCount {
            let key = try cursor.string("the key of metadata entry \(index)")
            let type = try cursor.load(UInt32.self, "the value type of metadata key '\(key)'")
            let value = try cursor.value(type: type, key: key, depth: 0)
            if metadata.updateValue(value, forKey: key) != nil {
                throw CheckpointError(.malformedHeader, path: path, expected: "unique metadata keys",
                                      found: "key '\(key)' twice")
            }
            metadataKeys.append(key)
        }
        self.metadata = metadata
        self.metadataKeys = metadataKeys

        var alignment = 32
        if let value = metadata["general.alignment"] {
            guard let requested = value.int, requested > 0, requested & (requested - 1) == 0 else {
                throw CheckpointError(.malformedHeader, path: path, expected: "general.alignment a power of two",
                                      found: "\(value)")
            }
            alignment = requested
        }
        self.alignment = alignment

        struct RawTensor { var info: TensorInfo; var relativeOffset: UInt64; var ne: [Int] }
        var raw: [RawTensor] = []
        raw.reserveCapacity(tensorCount)
        for index in 0..<tensorCount {
            let name = try cursor.string("the name of tensor \(index)")
            let dimensionCount = Int(try cursor.load(UInt32.self, "the dimension count of tensor '\(name)'"))
            guard dimensionCount <= Self.maximumDimensions else {
                throw CheckpointError(.malformedHeader, path: path, tensor: name,
                                      expected: "at most \(Self.maximumDimensions) dimensions", found: "\(dimensionCount)")
            }
            var ne: [Int] = []
            for axis in 0..<dimensionCount {
                let extent = try cursor.load(UInt64.self, "ne[\(axis)] of tensor '\(name)'")
                guard let value = Int(exactly: extent), value >= 0 else {
                    throw CheckpointError(.malformedHeader, path: path, tensor: name,
                                          expected: "ne[\(axis)] below 2^63", found: "\(extent)")
                }
                ne.append(value)
            }
            let typeID = try cursor.load(UInt32.self, "the ggml type of tensor '\(name)'")
            guard let dtype = TensorDType(ggmlType: typeID) else {
                throw CheckpointError(.unsupportedDType, path: path, tensor: name,
                                      expected: "a ggml type this reader dequantises (F32, F16, BF16, F64, I8–I64, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K–Q6_K, Q8_K)",
                                      found: "ggml type id \(typeID) (\(TensorDType.ggmlTypeName(typeID)))")
            }
            let offset = try cursor.load(UInt64.self, "the data offset of tensor '\(name)'")
            raw.append(RawTensor(info: TensorInfo(name: name, shape: ne.reversed(), dtype: dtype), relativeOffset: offset, ne: ne))
        }
        let dataOffset = (cursor.offset + alignment - 1) / alignment * alignment
        self.dataOffset = dataOffset

        var entries: [String: MappedTensors.Entry] = [:]
        entries.reserveCapacity(tensorCount)
        for tensor in raw {
            let info = tensor.info
            let elementCount = try Self.checkedElementCount(tensor.ne, name: info.name, path: path)
            let blockLength = info.dtype.elementsPerBlock
            if let innermost = tensor.ne.first, innermost % blockLength != 0 {
                throw CheckpointError(.inconsistentTensor, path: path, tensor: info.name,
                                      expected: "ne[0] (the last HF dimension) a multiple of \(blockLength) for \(info.dtype.rawValue.uppercased())",
                                      found: "ne[0] = \(innermost)")
            }
            guard let byteCount = info.dtype.byteCount(elementCount: elementCount) else {
                throw CheckpointError(.inconsistentTensor, path: path, tensor: info.name,
                                      expected: "a size below 2^63 bytes", found: "shape \(info.shape) of \(info.dtype.rawValue)")
            }
            guard tensor.relativeOffset % UInt64(alignment) == 0 else {
                throw CheckpointError(.inconsistentTensor, path: path, tensor: info.name,
                                      expected: "a data offset that is a multiple of the alignment \(alignment)",
                                      found: "offset \(tensor.relativeOffset)")
            }
            let (start, overflow) = dataOffset.addingReportingOverflow(Int(clamping: tensor.relativeOffset))
            guard !overflow, start <= file.count, byteCount <= file.count - start else {
                throw CheckpointError(.truncated, path: path, tensor: info.name,
                                      expected: "\(byteCount) bytes of tensor data at file offset \(dataOffset) + \(tensor.relativeOffset)",
                                      found: "a file of \(file.count) bytes")
            }
            guard entries.updateValue(.init(info: info, offset: start, byteCount: byteCount), forKey: info.name) == nil else {
                throw CheckpointError(.duplicateTensor, path: path, tensor: info.name, expected: "unique tensor names",
                                      found: "a second tensor named '\(info.name)'")
            }
        }
        try MappedTensors.checkNoOverlap(entries.values, path: path)

        self.url = url
        self.tensorNames = raw.map(\.info.name)
        self.table = MappedTensors(file: file, entries: entries)
        self.tensors = table.infos
    }

    /// The absolute byte range of tensor `name`'s data in the file, or nil if there is no such tensor.
    public func byteRange(of name: String) -> Range<Int>? { table.byteRange(of: name) }

    public func read(_ name: String, elements: Range<Int>, into destination: UnsafeMutableBufferPointer<Float>) throws {
        try table.read(name, elements: elements, into: destination)
    }

    private static func checkedElementCount(_ ne: [Int], name: String, path: String) throws -> Int {
        var count = 1
        for extent in ne {
            let (product, overflow) = count.multipliedReportingOverflow(by: extent)
            guard !overflow else {
                throw CheckpointError(.malformedHeader, path: path, tensor: name,
                                      expected: "an element count below 2^63", found: "ne = \(ne)")
            }
            count = product
        }
        return count
    }
}

/// A bounds-checked little-endian reader over a mapped GGUF header.
private struct ByteCursor {
    let bytes: UnsafeRawBufferPointer
    let path: String
    var offset = 0

    init(bytes: UnsafeRawBufferPointer, path: String) {
        self.bytes = bytes
        self.path = path
    }

    var remaining: Int { bytes.count - offset }

    mutating func take(_ count: Int, _ what: @autoclosure () -> String) throws -> UnsafeRawBufferPointer {
        guard count >= 0, count <= remaining else {
            throw CheckpointError(.truncated, path: path,
                                  expected: "\(count) bytes for \(what()) at offset \(offset)",
                                  found: "a file of \(bytes.count) bytes")
        }
        defer { offset += count }
        return UnsafeRawBufferPointer(rebasing: bytes[offset..<offset + count])
    }

    mutating func load<T: FixedWidthInteger>(_: T.Type, _ what: @autoclosure () -> String) throws -> T {
        let raw = try take(MemoryLayout<T>.size, what())
        return T(littleEndian: raw.loadUnaligned(as: T.self))
    }

    /// Reads a UInt64 count and checks that `count × minimumBytesEach` bytes remain.
    mutating func count(minimumBytesEach: Int, _ what: @autoclosure () -> String) throws -> Int {
        let start = offset
        let value = try load(UInt64.self, what())
        guard value <= UInt64(remaining / max(minimumBytesEach, 1)) else {
            throw CheckpointError(.truncated, path: path,
                                  expected: "\(what()) at offset \(start) small enough to fit in the file (at least \(minimumBytesEach) bytes each)",
                                  found: "\(value), with \(remaining) bytes left in a file of \(bytes.count) bytes")
        }
        return Int(value)
    }

    mutating func string(_ what: @autoclosure () -> String) throws -> String {
        let length = try count(minimumBytesEach: 1, "the length of \(what())")
        let start = offset
        let raw = try take(length, what())
        // GGUF strings are UTF-8 (the gguf package decodes them strictly); a broken one is an error, not U+FFFD.
        guard let text = String(validating: raw, as: UTF8.self) else {
            throw CheckpointError(.malformedHeader, path: path, expected: "UTF-8 text for \(what()) at offset \(start)",
                                  found: "bytes that are not UTF-8")
        }
        return text
    }

    /// The smallest encoding of a value of GGUF type `type`, for sanity-checking array counts.
    static func minimumSize(ofType type: UInt32) -> Int {
        switch type {
        case 0, 1, 7: 1
        case 2, 3: 2
        case 4, 5, 6: 4
        case 10, 11, 12, 8: 8
        case 9: 12
        default: 1
        }
    }

    mutating func value(type: UInt32, key: String, depth: Int) throws -> GGUFValue {
        let what = "the value of metadata key '\(key)'"
        switch type {
        case 0: return .uint8(try load(UInt8.self, what))
        case 1: return .int8(try load(Int8.self, what))
        case 2: return .uint16(try load(UInt16.self, what))
        case 3: return .int16(try load(Int16.self, what))
        case 4: return .uint32(try load(UInt32.self, what))
        case 5: return .int32(try load(Int32.self, what))
        case 6: return .float32(Float(bitPattern: try load(UInt32.self, what)))
        case 7: return .bool(try load(UInt8.self, what) != 0)
        case 8: return .string(try string(what))
        case 9:
            guard depth < 16 else {
                throw CheckpointError(.malformedHeader, path: path, expected: "arrays nested at most 16 deep",
                                      found: "deeper nesting in metadata key '\(key)'")
            }
            let elementType = try load(UInt32.self, "the element type of metadata array '\(key)'")
            let count = try self.count(minimumBytesEach: Self.minimumSize(ofType: elementType),
                                       "the element count of metadata array '\(key)'")
            var elements: [GGUFValue] = []
            elements.reserveCapacity(count)
            for _ in 0..<count { elements.append(try value(type: elementType, key: key, depth: depth + 1)) }
            return .array(elements)
        case 10: return .uint64(try load(UInt64.self, what))
        case 11: return .int64(try load(Int64.self, what))
        case 12: return .float64(Double(bitPattern: try load(UInt64.self, what)))
        default:
            throw CheckpointError(.malformedHeader, path: path,
                                  expected: "a GGUF value type 0–12 for metadata key '\(key)'", found: "type \(type)")
        }
    }
}
