/// The validated tensor table of one memory-mapped file: where each tensor's bytes start.
///
/// Shared by `SafetensorsFile` and `GGUFFile`. Construction guarantees that every tensor's bytes
/// lie inside the mapping, so `read` needs no further checks against the file.
struct MappedTensors: Sendable {
    struct Entry: Sendable {
        var info: TensorInfo
        /// Absolute byte offset of the tensor's first element in the file.
        var offset: Int
        var byteCount: Int
    }

    let file: MappedFile
    let entries: [String: Entry]
    let infos: [String: TensorInfo]

    init(file: MappedFile, entries: [String: Entry]) {
        self.file = file
        self.entries = entries
        self.infos = entries.mapValues(\.info)
    }

    /// The absolute byte range of tensor `name` in the file, or nil if there is no such tensor.
    func byteRange(of name: String) -> Range<Int>? {
        entries[name].map { $0.offset..<($0.offset + $0.byteCount) }
    }

    func read(_ name: String, elements: Range<Int>, into destination: UnsafeMutableBufferPointer<Float>) throws {
        guard let entry = entries[name] else {
            throw CheckpointError.tensorNotFound(name, in: file.path, available: entries.keys)
        }
        guard elements.lowerBound >= 0, elements.upperBound <= entry.info.elementCount else {
            throw CheckpointError.rangeOutOfBounds(elements, tensor: entry.info, in: file.path)
        }
        precondition(destination.count == elements.count,
                     "read(\(name), elements: \(elements)): destination holds \(destination.count) floats, expected \(elements.count)")
        guard !elements.isEmpty, let base = file.bytes.baseAddress, let output = destination.baseAddress else { return }
        ElementDecoder.decode(entry.info.dtype, data: base + entry.offset, elements: elements, into: output)
    }

    /// Throws `.overlappingTensors` if two tensors share bytes (empty tensors never overlap).
    static func checkNoOverlap(_ entries: some Collection<Entry>, path: String) throws {
        let sorted = entries.filter { $0.byteCount > 0 }.sorted { $0.offset < $1.offset }
        for (previous, next) in zip(sorted, sorted.dropFirst()) where next.offset < previous.offset + previous.byteCount {
            throw CheckpointError(
                .overlappingTensors, path: path, tensor: next.info.name,
                expected: "bytes disjoint from tensor '\(previous.info.name)' (file bytes \(previous.offset)..<\(previous.offset + previous.byteCount))",
                found: "file bytes \(next.offset)..<\(next.offset + next.byteCount)")
        }
    }
}

/// Describes the first bytes of a buffer for an error message: printable ASCII in quotes, then hex.
func describeBytes(_ bytes: UnsafeRawBufferPointer, count: Int = 8) -> String {
    guard !bytes.isEmpty else { return "an empty file" }
    let prefix = bytes.prefix(count)
    let text = String(prefix.map { (0x20..<0x7F).contains($0) ? Character(UnicodeScalar($0)) : "." })
    let hex = prefix.map { String($0, radix: 16).leftPadded(to: 2) }.joined(separator: " ")
    return "'\(text)' (\(hex))"
}

extension String {
    func leftPadded(to width: Int) -> String {
        count >= width ? self : String(repeating: "0", count: width - count) + self
    }
}
