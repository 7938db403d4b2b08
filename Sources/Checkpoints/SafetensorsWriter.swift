import Foundation
import SystemPackage
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Writes safetensors files laid out exactly as the `safetensors` Python package lays them out.
///
/// Layout: 8-byte little-endian header length N, N bytes of compact JSON (`__metadata__` first, then
/// tensors sorted by name; padded with spaces so that N is a multiple of 8), then each tensor's bytes
/// in the same order with no gaps. For one dtype this is byte-for-byte what `safetensors.torch.save_file`
/// writes for the same tensors and (single-key or key-sorted) metadata.
public enum SafetensorsWriter {
    /// Writes tensors (F32, or F16/BF16 converted from Float if requested) with HF layout and an optional __metadata__ map.
    ///
    /// Writes to a temporary file in the same directory and renames it into place: a failure never leaves a half-written file, and it refuses to overwrite an existing file unless `overwrite` is true.
    /// F16 and BF16 conversions round to nearest even, as PyTorch's `.half()` and `.bfloat16()` do.
    /// The file is flushed to disk (`fsync`) before it is renamed into place.
    /// Throws `CheckpointError`: `.fileExists`, `.writeFailed`, `.unsupportedDType` (not F32/F16/BF16),
    /// `.inconsistentTensor` (shape product ≠ data count), `.duplicateTensor`, `.malformedHeader` (a tensor named `__metadata__`).
    public static func write(_ tensors: [(name: String, shape: [Int], data: UnsafeBufferPointer<Float>)], dtype: TensorDType = .f32, metadata: [String: String] = [:], to url: URL, overwrite: Bool = false) throws {
        for tensor in tensors {
            let count = tensor.shape.reduce(1) { $0 &* max($1, 0) }
            guard tensor.shape.allSatisfy({ $0 >= 0 }), count == tensor.data.count else {
                throw CheckpointError(.inconsistentTensor, path: url.path, tensor: tensor.name,
                                      expected: "\(count) floats for shape \(tensor.shape)", found: "\(tensor.data.count)")
            }
        }
        let data = Dictionary(tensors.map { ($0.name, $0.data) }, uniquingKeysWith: { first, _ in first })
        try writeFile(layout: tensors.map { ($0.name, $0.shape) }, dtype: dtype, metadata: metadata, to: url,
                      overwrite: overwrite) { name, _, sink in
            try sink(data[name]!)
        }
    }

    /// Writes tensors whose values `produce` supplies piece by piece, so that no caller ever needs the
    /// whole checkpoint in memory (under ZeRO stage 3, gather one chunk of one tensor at a time).
    ///
    /// Tensors are written in file order (sorted by name, bytewise). For each tensor, `produce(name,
    /// elements, destination)` is called for consecutive element ranges of at most `chunkElements`
    /// elements, covering the tensor, and must fill `destination` (count == elements.count) with those
    /// elements in row-major order. An error thrown by `produce` aborts the write and is rethrown; as
    /// with the other `write`, nothing is left under the destination name.
    /// The output is byte-identical to `write(_:dtype:metadata:to:overwrite:)` with the same values.
    public static func write(layout: [(name: String, shape: [Int])], dtype: TensorDType = .f32, metadata: [String: String] = [:], to url: URL, overwrite: Bool = false, chunkElements: Int = 1 << 20, produce: (_ name: String, _ elements: Range<Int>, _ destination: UnsafeMutableBufferPointer<Float>) throws -> Void) throws {
        precondition(chunkElements > 0, "SafetensorsWriter.write: chunkElements must be positive, got \(chunkElements)")
        let scratch = UnsafeMutableBufferPointer<Float>.allocate(capacity: chunkElements)
        defer { scratch.deallocate() }
        try writeFile(layout: layout, dtype: dtype, metadata: metadata, to: url, overwrite: overwrite) { name, count, sink in
            var start = 0
            while start < count {
                let elements = start..<min(start + chunkElements, count)
                let chunk = UnsafeMutableBufferPointer(rebasing: scratch[0..<elements.count])
                try produce(name, elements, chunk)
                try sink(UnsafeBufferPointer(chunk))
                start = elements.upperBound
            }
        }
    }

    /// The order in which ``write(layout:dtype:metadata:to:overwrite:chunkElements:produce:)`` writes
    /// `layout`'s tensors (and asks `produce` for them): by name, bytewise — the safetensors
    /// package's order (dtype alignment, then name) for one dtype. A sharded writer whose ranks gather
    /// units as the walk reaches them must walk this order on every rank.
    public static func fileOrder(_ layout: [(name: String, shape: [Int])]) -> [(name: String, shape: [Int])] {
        layout.sorted { $0.name.utf8.lexicographicallyPrecedes($1.name.utf8) }
    }

    /// Validates the layout, writes header and data (supplied per tensor by `emit`, which passes
    /// consecutive pieces of the tensor to its sink) to a temporary file, and commits it.
    private static func writeFile(
        layout: [(name: String, shape: [Int])], dtype: TensorDType, metadata: [String: String], to url: URL, overwrite: Bool,
        emit: (_ name: String, _ elementCount: Int, _ sink: (UnsafeBufferPointer<Float>) throws -> Void) throws -> Void
    ) throws {
        let path = url.path
        guard dtype == .f32 || dtype == .f16 || dtype == .bf16, let dtypeName = dtype.safetensorsName else {
            throw CheckpointError(.unsupportedDType, path: path, expected: "f32, f16 or bf16 for writing", found: dtype.rawValue)
        }
        var seen = Set<String>()
        var counts: [String: Int] = [:]
        for tensor in layout {
            guard tensor.name != "__metadata__" else {
                throw CheckpointError(.malformedHeader, path: path, tensor: tensor.name,
                                      expected: "a tensor name other than the reserved '__metadata__'", found: "'__metadata__'")
            }
            guard seen.insert(tensor.name).inserted else {
                throw CheckpointError(.duplicateTensor, path: path, tensor: tensor.name, expected: "unique tensor names",
                                      found: "'\(tensor.name)' twice")
            }
            var count = 1
            for extent in tensor.shape {
                let (product, overflow) = count.multipliedReportingOverflow(by: extent)
                guard extent >= 0, !overflow else {
                    throw CheckpointError(.inconsistentTensor, path: path, tensor: tensor.name,
                                          expected: "non-negative dimensions with a product below 2^63", found: "shape \(tensor.shape)")
                }
                count = product
            }
            counts[tensor.name] = count
        }
        if !overwrite, FileManager.default.fileExists(atPath: path) {
            throw CheckpointError(.fileExists, path: path, expected: "no existing file (pass overwrite: true to replace it)",
                                  found: "an existing file")
        }

        let ordered = fileOrder(layout)
        let elementSize = dtype.bytesPerBlock
        var header = "{"
        if !metadata.isEmpty {
            let keys = metadata.keys.sorted { $0.utf8.lexicographicallyPrecedes($1.utf8) }
            header += "\"__metadata__\":{"
            header += keys.map { "\(JSONText.string($0)):\(JSONText.string(metadata[$0]!))" }.joined(separator: ",")
            header += "}"
        }
        var offset = 0
        for (index, tensor) in ordered.enumerated() {
            if index > 0 || !metadata.isEmpty { header += "," }
            let end = offset + counts[tensor.name]! * elementSize
            header += "\(JSONText.string(tensor.name)):{\"dtype\":\"\(dtypeName)\",\"shape\":[\(tensor.shape.map(String.init).joined(separator: ","))],\"data_offsets\":[\(offset),\(end)]}"
            offset = end
        }
        header += "}"
        var headerBytes = Array(header.utf8)
        headerBytes += repeatElement(UInt8(ascii: " "), count: (8 - headerBytes.count % 8) % 8)

        var output = try TemporaryOutput(destination: path)
        do {
            var length = UInt64(headerBytes.count).littleEndian
            try withUnsafeBytes(of: &length) { try output.write($0) }
            try headerBytes.withUnsafeBytes { try output.write($0) }
            for tensor in ordered {
                let count = counts[tensor.name]!
                var written = 0
                try emit(tensor.name, count) { piece in
                    precondition(written + piece.count <= count, "SafetensorsWriter: more data than shape \(tensor.shape) of '\(tensor.name)'")
                    try writeData(piece, as: dtype, to: &output)
                    written += piece.count
                }
                precondition(written == count, "SafetensorsWriter: \(written) of \(count) elements of '\(tensor.name)' supplied")
            }
            try output.commit(overwrite: overwrite)
        } catch {
            output.discard()
            throw error
        }
    }

    private static func writeData(_ data: UnsafeBufferPointer<Float>, as dtype: TensorDType, to output: inout TemporaryOutput) throws {
        guard let base = data.baseAddress, !data.isEmpty else { return }
        if dtype == .f32 {
            try output.write(UnsafeRawBufferPointer(start: base, count: data.count * 4))
            return
        }
        let chunk = 1 << 16
        let scratch = UnsafeMutableBufferPointer<UInt16>.allocate(capacity: chunk)
        defer { scratch.deallocate() }
        var start = 0
        while start < data.count {
            let count = min(chunk, data.count - start)
            let source = base + start
            if dtype == .f16 {
                for i in 0..<count { scratch[i] = halfBits(from: source[i]).littleEndian }
            } else {
                for i in 0..<count { scratch[i] = bfloat16Bits(from: source[i]).littleEndian }
            }
            try output.write(UnsafeRawBufferPointer(start: scratch.baseAddress, count: count * 2))
            start += count
        }
    }
}

/// A temporary file next to its destination, renamed (or hard-linked, when replacing is not allowed)
/// into place on `commit`, deleted on `discard`.
/// The corresponding C functions are `mkstemp`, `write` (through swift-system's `FileDescriptor.writeAll`,
/// which retries short writes and `EINTR`), `fsync`, `link`, `rename` and `unlink`.
struct TemporaryOutput {
    let destination: String
    let temporaryPath: String
    private var descriptor: Int32

    init(destination: String) throws {
        self.destination = destination
        let url = URL(fileURLWithPath: destination)
        let directory = url.deletingLastPathComponent().path
        var template = Array("\(directory)/.\(url.lastPathComponent).tmp-XXXXXX".utf8CString)
        let descriptor = template.withUnsafeMutableBufferPointer { mkstemp($0.baseAddress!) }
        guard descriptor >= 0 else { throw Self.failure(destination, "creating a temporary file in \(directory)") }
        self.descriptor = descriptor
        self.temporaryPath = template.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
        fchmod(descriptor, 0o644)
    }

    mutating func write(_ bytes: UnsafeRawBufferPointer) throws {
        do { _ = try FileDescriptor(rawValue: descriptor).writeAll(bytes) } catch let error as Errno {
            throw Self.failure(destination, "writing \(temporaryPath)", code: error.rawValue)
        }
    }

    /// Flushes, closes and moves the file into place; without `overwrite`, fails if the destination exists.
    mutating func commit(overwrite: Bool) throws {
        guard fsync(descriptor) == 0 else { throw Self.failure(destination, "fsync of \(temporaryPath)") }
        let closed = close(descriptor)
        descriptor = -1
        guard closed == 0 else { throw Self.failure(destination, "closing \(temporaryPath)") }
        if overwrite {
            guard rename(temporaryPath, destination) == 0 else { throw Self.failure(destination, "renaming \(temporaryPath) into place") }
            return
        }
        // link() fails with EEXIST if the destination appeared meanwhile: an atomic no-replace rename.
        if link(temporaryPath, destination) == 0 {
            unlink(temporaryPath)
            return
        }
        let code = errno
        if code == EEXIST {
            throw CheckpointError(.fileExists, path: destination, expected: "no existing file (pass overwrite: true to replace it)",
                                  found: "a file created while writing")
        }
        // Filesystems without hard links: fall back to check-then-rename.
        guard code == EPERM || code == ENOTSUP || code == EOPNOTSUPP || code == EXDEV || code == EMLINK else {
            throw Self.failure(destination, "linking \(temporaryPath) into place", code: code)
        }
        guard !FileManager.default.fileExists(atPath: destination) else {
            throw CheckpointError(.fileExists, path: destination, expected: "no existing file (pass overwrite: true to replace it)",
                                  found: "a file created while writing")
        }
        guard rename(temporaryPath, destination) == 0 else { throw Self.failure(destination, "renaming \(temporaryPath) into place") }
    }

    /// Closes and deletes the temporary file.
    mutating func discard() {
        if descriptor >= 0 { close(descriptor) }
        descriptor = -1
        unlink(temporaryPath)
    }

    private static func failure(_ destination: String, _ action: String, code: Int32 = errno) -> CheckpointError {
        CheckpointError(.writeFailed, path: destination, found: "\(action) failed: \(String(cString: strerror(code))) (errno \(code))")
    }
}
