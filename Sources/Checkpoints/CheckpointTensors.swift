import Foundation
import SystemPackage
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// One role of a training checkpoint (``CheckpointReader``) as a ``TensorSource``: every tensor of the
/// manifest, F32, under its HF name, read by range from the pieces the saving ranks wrote. What makes a
/// checkpoint folder a model (`--model …/checkpoint-STEP`, role `params`).
///
/// Reads go through `pread` straight into the destination (the stored data is F32 little-endian, the
/// destination's own type), not through the shard files' memory mappings: a process that streams the
/// whole model (an export) holds only the chunk it is writing, not every page it has read; a rank of a
/// stage-3 job reads only the pieces that overlap its ranges.
///
/// Opening hashes every shard file (``XXHash64``, by `read` in 4 MiB chunks, the mappings untouched)
/// and compares with the manifest: a flipped byte anywhere — in a role that is not read, or in the
/// header — is an error naming the file before anything uses a value.
public final class CheckpointTensors: TensorSource, @unchecked Sendable {
    public let reader: CheckpointReader
    /// The role read (``TrainingCheckpointFormat/roles``: `params`, `exp_avg`, `exp_avg_sq`).
    public let role: String
    public let tensors: [String: TensorInfo]
    /// Per shard file (manifest order): its open descriptor and the absolute byte offset of the role's data.
    private let shards: [(descriptor: FileDescriptor, dataOffset: Int)]

    public var location: String { reader.directory.path }

    /// Opens `role` of `reader`'s checkpoint. `verify`: hash every shard file first (see the type's documentation).
    /// Throws `CheckpointError`: `.checksumMismatch` naming the file, `.tensorNotFound` (no such role),
    /// `.unreadableFile` (open or read failed).
    public init(reader: CheckpointReader, role: String = "params", verify: Bool = true) throws {
        guard reader.manifest.roles.contains(role) else {
            throw CheckpointError(.tensorNotFound, path: reader.directory.path, tensor: role,
                                  expected: "a role: \(reader.manifest.roles.joined(separator: ", "))", found: "'\(role)'")
        }
        if verify {
            for index in reader.manifest.shards.indices { try reader.verify(shard: index) }
        }
        self.reader = reader
        self.role = role
        var tensors: [String: TensorInfo] = [:]
        for tensor in reader.manifest.tensors { tensors[tensor.name] = TensorInfo(name: tensor.name, shape: tensor.shape, dtype: .f32) }
        self.tensors = tensors
        var shards: [(FileDescriptor, Int)] = []
        do {
            for (index, file) in reader.files.enumerated() {
                guard let range = file.byteRange(of: role) else {
                    throw CheckpointError(.malformedHeader, path: file.url.path, tensor: role, expected: "a 1-D F32 tensor per role", found: "none")
                }
                guard file.tensors[role]?.dtype == .f32 else {
                    throw CheckpointError(.unsupportedDType, path: file.url.path, tensor: role, expected: "F32",
                                          found: "\(file.tensors[role].map { "\($0.dtype)" } ?? "none")")
                }
                shards.append((try Self.open(reader.shardURL(index).path), range.lowerBound))
            }
        } catch {
            for (descriptor, _) in shards { try? descriptor.close() }
            throw error
        }
        self.shards = shards
    }

    deinit {
        for shard in shards { try? shard.descriptor.close() }
    }

    public func read(_ name: String, elements: Range<Int>, into destination: UnsafeMutableBufferPointer<Float>) throws {
        precondition(destination.count == elements.count, "CheckpointTensors.read: destination holds \(destination.count), range has \(elements.count)")
        guard let info = tensors[name], let list = reader.pieces[name] else {
            throw CheckpointError.tensorNotFound(name, in: location, available: tensors.keys)
        }
        guard elements.lowerBound >= 0, elements.upperBound <= info.elementCount else {
            throw CheckpointError.rangeOutOfBounds(elements, tensor: info, in: location)
        }
        for (shard, piece) in list {
            let overlap = elements.clamped(to: piece.offset..<(piece.offset + piece.count))
            if overlap.isEmpty { continue }
            let at = piece.at + overlap.lowerBound - piece.offset
            let local = (overlap.lowerBound - elements.lowerBound)..<(overlap.upperBound - elements.lowerBound)
            let (descriptor, dataOffset) = shards[shard]
            try readFully(descriptor, into: UnsafeMutableRawBufferPointer(UnsafeMutableBufferPointer(rebasing: destination[local])),
                          at: dataOffset + at * MemoryLayout<Float>.size, path: reader.shardURL(shard).path)
        }
    }

    /// Reads exactly `buffer.count` bytes at `offset`. The corresponding C function is `pread`.
    private func readFully(_ descriptor: FileDescriptor, into buffer: UnsafeMutableRawBufferPointer, at offset: Int, path: String) throws {
        var done = 0
        while done < buffer.count {
            let got: Int
            do {
                got = try descriptor.read(fromAbsoluteOffset: Int64(offset + done), into: UnsafeMutableRawBufferPointer(rebasing: buffer[done...]),
                                          retryOnInterrupt: true)
            } catch let error as Errno {
                throw MappedFile.systemError(path, "pread", code: error.rawValue)
            }
            guard got > 0 else {
                throw CheckpointError(.truncated, path: path, expected: "\(buffer.count) bytes at offset \(offset)", found: "end of file after \(done)")
            }
            done += got
        }
    }

    static func open(_ path: String) throws -> FileDescriptor {
        do { return try FileDescriptor.open(FilePath(path), .readOnly, options: [.closeOnExec]) } catch let error as Errno {
            throw MappedFile.systemError(path, "open", code: error.rawValue)
        }
    }
}
