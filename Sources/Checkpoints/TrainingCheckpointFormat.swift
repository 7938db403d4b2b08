import Foundation
import SystemPackage

/// The layout of a training checkpoint folder (`OUTPUT_DIR/checkpoint-STEP/`, HF Trainer's naming).
///
/// ```
/// checkpoint-STEP/
///   trainer_state.json                  manifest (rank 0): {"checkpoint": CheckpointManifest, "training": …}
///   rank-00000-of-00004.safetensors     rank 0's partition of params, exp_avg, exp_avg_sq (fp32)
///   …                                   one file per rank of the saving job
///   metrics.jsonl                       the metrics lines written so far
///   config.json, tokenizer files …      copied in, so the folder describes its model
///   COMPLETE                            written last, after every rank confirmed its file
/// ```
/// Each shard file is a safetensors file with three 1-D F32 tensors, one per role, each the rank's
/// partition of every unit in unit order (ZeRO's stage-3 flat buffer, padding included), and a
/// `__metadata__` map: `format` (`zero-sft-checkpoint-shard`), `version`, `rank`, `ranks`, `stage`,
/// `step` and `pieces`, a JSON array of ``CheckpointPiece`` (HF tensor name, first element within the
/// tensor, element count, position within the role's data). See docs/formats.md.
public enum TrainingCheckpointFormat {
    /// `format` of the manifest.
    public static let manifestFormat = "zero-sft-checkpoint"
    /// `format` in every shard file's `__metadata__`.
    public static let shardFormat = "zero-sft-checkpoint-shard"
    /// The version this build writes and the only one it reads.
    public static let version = 1
    public static let manifestName = "trainer_state.json"
    public static let completionMarkerName = "COMPLETE"
    public static let metricsName = "metrics.jsonl"
    /// The roles saved, by PyTorch's names: parameters and AdamW's first and second moments.
    public static let roles = ["params", "exp_avg", "exp_avg_sq"]

    /// `checkpoint-STEP`.
    public static func directoryName(step: Int) -> String { "checkpoint-\(step)" }

    /// `rank-00001-of-00004.safetensors` (HF's shard naming, by rank).
    public static func shardName(rank: Int, ranks: Int) -> String {
        func five(_ n: Int) -> String { let s = String(n); return String(repeating: "0", count: max(0, 5 - s.count)) + s }
        return "rank-\(five(rank))-of-\(five(ranks)).safetensors"
    }

    /// The step of a folder named `checkpoint-STEP`, or nil.
    public static func step(ofDirectoryNamed name: String) -> Int? {
        guard name.hasPrefix("checkpoint-") else { return nil }
        let digits = name.dropFirst("checkpoint-".count)
        guard !digits.isEmpty, digits.allSatisfy({ $0.isASCII && $0.isNumber }) else { return nil }
        return Int(digits)
    }

    /// The name of a save's temporary folder: `.checkpoint-STEP.tmp-SUFFIX`.
    public static func temporaryName(step: Int, suffix: String) -> String { ".checkpoint-\(step).tmp-\(suffix)" }

    /// Whether `name` is a temporary left by a save of ours (a checkpoint folder being written, or the
    /// final model's `.model.safetensors.tmp-*`): ignored when deciding whether OUTPUT_DIR is empty,
    /// and removed by the next save.
    public static func isTemporary(_ name: String) -> Bool {
        (name.hasPrefix(".checkpoint-") && name.contains(".tmp-")) || (name.hasPrefix(".") && name.contains(".safetensors.tmp-"))
    }
}

/// One contiguous run of a tensor inside a role's data in a shard file.
public struct CheckpointPiece: Codable, Sendable, Equatable {
    /// The HF tensor name.
    public var tensor: String
    /// The first element within the tensor (row-major, global: the same whatever the rank count).
    public var offset: Int
    /// Elements.
    public var count: Int
    /// Where the first of them sits within the role's data (elements from the role tensor's start).
    public var at: Int

    public init(tensor: String, offset: Int, count: Int, at: Int) {
        self.tensor = tensor
        self.offset = offset
        self.count = count
        self.at = at
    }
}

/// The format part of `trainer_state.json` (under its `checkpoint` key): what a reader needs to find
/// and check every piece. The training state sits beside it under `training` (Training's
/// `TrainingResumeState`); readers of the weights ignore it.
public struct CheckpointManifest: Codable, Sendable, Equatable {
    public struct Tensor: Codable, Sendable, Equatable {
        public var name: String
        public var shape: [Int]
        public init(name: String, shape: [Int]) { self.name = name; self.shape = shape }
    }
    public struct Shard: Codable, Sendable, Equatable {
        /// The file name inside the checkpoint folder.
        public var file: String
        public var rank: Int
        /// The file's size in bytes.
        public var bytes: Int
        /// ``XXHash64`` of the whole file, 16 hex digits.
        public var xxh64: String
        public init(file: String, rank: Int, bytes: Int, xxh64: String) {
            self.file = file
            self.rank = rank
            self.bytes = bytes
            self.xxh64 = xxh64
        }
    }

    public var format = TrainingCheckpointFormat.manifestFormat
    public var version = TrainingCheckpointFormat.version
    /// Optimizer steps completed.
    public var step: Int
    /// The ZeRO stage and rank count of the job that saved it (any may resume it).
    public var stage: Int
    public var ranks: Int
    /// The roles in every shard file.
    public var roles: [String]
    /// Every parameter tensor, in the model's layout order.
    public var tensors: [Tensor]
    public var shards: [Shard]
    /// Other files of the folder (config, tokenizer, metrics), by name.
    public var files: [String]

    public init(step: Int, stage: Int, ranks: Int, roles: [String] = TrainingCheckpointFormat.roles, tensors: [Tensor],
                shards: [Shard], files: [String]) {
        self.step = step
        self.stage = stage
        self.ranks = ranks
        self.roles = roles
        self.tensors = tensors
        self.shards = shards
        self.files = files
    }
}

/// Writes one rank's shard file of a training checkpoint.
public enum TrainingCheckpointWriter {
    /// Writes `url` (a new file: refused if it exists) as safetensors: the header, then each role's data
    /// from `segments` in order (at stage 3 one buffer per role — one write; below, one slice per unit
    /// of the replicated buffer), hashing the bytes as they go. The file is fsynced before it appears
    /// under its name. Returns its size and ``XXHash64``.
    ///
    /// - Parameters: `roles`: name → the rank's data of that role as consecutive segments; every role
    ///   the same number of elements. `pieces`: where each tensor's part lies within a role's data.
    ///   `afterFirstRole`: called once the header and the first role are written, before the rest and
    ///   the rename (a test hook: `ZERO_SFT_FAULT`'s `save` phase kills the process there).
    /// - Throws: `CheckpointError` `.writeFailed` naming the file and the failed call (`No space left
    ///   on device (errno 28)`), `.fileExists`.
    public static func writeShard(
        to url: URL, metadata: [String: String], pieces: [CheckpointPiece],
        roles: [(name: String, segments: [UnsafeBufferPointer<Float>])], afterFirstRole: (() -> Void)? = nil
    ) throws -> (bytes: Int, xxh64: String) {
        let counts = roles.map { $0.segments.reduce(0) { $0 + $1.count } }
        precondition(Set(counts).count <= 1, "TrainingCheckpointWriter: roles of different sizes \(counts)")
        let elements = counts.first ?? 0
        var metadata = metadata
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        metadata["pieces"] = String(decoding: try encoder.encode(pieces), as: UTF8.self)
        metadata["format"] = TrainingCheckpointFormat.shardFormat
        metadata["version"] = String(TrainingCheckpointFormat.version)
        // safetensors' order: sorted by name; data back to back.
        let ordered = roles.sorted { $0.name.utf8.lexicographicallyPrecedes($1.name.utf8) }
        var header = "{\"__metadata__\":{"
        header += metadata.keys.sorted { $0.utf8.lexicographicallyPrecedes($1.utf8) }
            .map { "\(JSONText.string($0)):\(JSONText.string(metadata[$0]!))" }.joined(separator: ",")
        header += "}"
        for (index, role) in ordered.enumerated() {
            let begin = index * elements * 4, end = begin + elements * 4
            header += ",\(JSONText.string(role.name)):{\"dtype\":\"F32\",\"shape\":[\(elements)],\"data_offsets\":[\(begin),\(end)]}"
        }
        header += "}"
        var headerBytes = Array(header.utf8)
        headerBytes += repeatElement(UInt8(ascii: " "), count: (8 - headerBytes.count % 8) % 8)

        var hasher = XXHash64()
        var output = try TemporaryOutput(destination: url.path)
        var written = 0
        func emit(_ bytes: UnsafeRawBufferPointer) throws {
            try output.write(bytes)
            hasher.update(bytes)
            written += bytes.count
        }
        do {
            var length = UInt64(headerBytes.count).littleEndian
            try withUnsafeBytes(of: &length) { try emit($0) }
            try headerBytes.withUnsafeBytes { try emit($0) }
            for (index, role) in ordered.enumerated() {
                for segment in role.segments where !segment.isEmpty { try emit(UnsafeRawBufferPointer(segment)) }
                if index == 0 { afterFirstRole?() }
            }
            try output.commit(overwrite: false)
        } catch {
            output.discard()
            throw error
        }
        return (written, hasher.hexDigest)
    }
}

/// A training checkpoint folder opened for reading: its manifest, and any range of any tensor of any
/// role, wherever the saving job's ranks put it (each shard file memory-mapped; a read touches only
/// the pages it needs). What `--resume` uses, and what a checkpoint-as-`--model` reader needs
/// (``read(role:tensor:elements:into:)`` with role `params`).
///
/// Opening checks the format, the completion marker, that every shard file exists with the size the
/// manifest records (a short file is an error naming it) and that its pieces cover every tensor once.
/// ``verify(shard:)`` checks a file's ``XXHash64``.
public final class CheckpointReader: @unchecked Sendable {
    public let directory: URL
    public let manifest: CheckpointManifest
    /// `trainer_state.json`'s bytes (its `training` part is decoded by the Training module).
    public let manifestData: Data
    let files: [SafetensorsFile]
    /// Tensor name → its pieces (shard index, piece), sorted by offset.
    let pieces: [String: [(shard: Int, piece: CheckpointPiece)]]
    let shapes: [String: [Int]]

    /// Opens `directory`. Throws `CheckpointError`: `.incompleteCheckpoint` (no completion marker or
    /// manifest), `.badMagic`/`.unsupportedVersion` (not a checkpoint of this format), `.truncated`
    /// (a shard file shorter or longer than recorded), `.malformedHeader`, `.inconsistentTensor` (pieces
    /// that do not cover a tensor exactly).
    public init(directory: URL) throws {
        self.directory = directory
        let manifestURL = directory.appendingPathComponent(TrainingCheckpointFormat.manifestName)
        let markerURL = directory.appendingPathComponent(TrainingCheckpointFormat.completionMarkerName)
        guard FileManager.default.fileExists(atPath: markerURL.path) else {
            throw CheckpointError(.incompleteCheckpoint, path: directory.path,
                                  expected: "a completion marker \(TrainingCheckpointFormat.completionMarkerName) (written last by a save)",
                                  found: FileManager.default.fileExists(atPath: manifestURL.path) ? "none" : "no marker and no \(TrainingCheckpointFormat.manifestName)")
        }
        let data: Data
        do { data = try Data(contentsOf: manifestURL) } catch {
            throw CheckpointError(.incompleteCheckpoint, path: manifestURL.path, found: "cannot read the manifest: \(FileOperation.reason(error))")
        }
        struct Envelope: Decodable { var checkpoint: CheckpointManifest }
        let manifest: CheckpointManifest
        do { manifest = try JSONDecoder().decode(Envelope.self, from: data).checkpoint } catch let error as DecodingError {
            throw CheckpointError.fromDecodingError(error, path: manifestURL.path)
        }
        guard manifest.format == TrainingCheckpointFormat.manifestFormat else {
            throw CheckpointError(.badMagic, path: manifestURL.path, expected: "format \"\(TrainingCheckpointFormat.manifestFormat)\"",
                                  found: "\"\(manifest.format)\"")
        }
        guard manifest.version == TrainingCheckpointFormat.version else {
            throw CheckpointError(.unsupportedVersion, path: manifestURL.path, expected: "version \(TrainingCheckpointFormat.version)",
                                  found: "version \(manifest.version)")
        }
        self.manifest = manifest
        manifestData = data
        shapes = Dictionary(manifest.tensors.map { ($0.name, $0.shape) }, uniquingKeysWith: { a, _ in a })
        var files: [SafetensorsFile] = []
        var pieces: [String: [(shard: Int, piece: CheckpointPiece)]] = [:]
        for (index, shard) in manifest.shards.enumerated() {
            let url = directory.appendingPathComponent(shard.file)
            let size = (try? FileManager.default.attributesOfItem(atPath: url.path)[.size] as? Int) ?? nil
            guard let size else {
                throw CheckpointError(.incompleteCheckpoint, path: url.path, expected: "shard file of rank \(shard.rank) (\(shard.bytes) bytes)",
                                      found: "no such file")
            }
            guard size == shard.bytes else {
                throw CheckpointError(.truncated, path: url.path,
                                      expected: "\(shard.bytes) bytes (\(TrainingCheckpointFormat.manifestName))", found: "\(size) bytes")
            }
            let file = try SafetensorsFile(url: url)
            guard file.metadata["format"] == TrainingCheckpointFormat.shardFormat else {
                throw CheckpointError(.badMagic, path: url.path, expected: "__metadata__ format \"\(TrainingCheckpointFormat.shardFormat)\"",
                                      found: file.metadata["format"].map { "\"\($0)\"" } ?? "none")
            }
            guard let text = file.metadata["pieces"],
                  let list = try? JSONDecoder().decode([CheckpointPiece].self, from: Data(text.utf8)) else {
                throw CheckpointError(.malformedHeader, path: url.path, expected: "__metadata__ pieces: a JSON array of pieces", found: "none or unreadable")
            }
            for role in manifest.roles {
                guard let info = file.tensors[role], info.shape.count == 1 else {
                    throw CheckpointError(.malformedHeader, path: url.path, tensor: role, expected: "a 1-D tensor per role", found: "none")
                }
                for piece in list where piece.at < 0 || piece.count < 0 || piece.at + piece.count > info.shape[0] {
                    throw CheckpointError(.inconsistentTensor, path: url.path, tensor: piece.tensor,
                                          expected: "a piece within the \(info.shape[0]) elements of role \(role)",
                                          found: "elements \(piece.at)..<\(piece.at + piece.count)")
                }
            }
            for piece in list { pieces[piece.tensor, default: []].append((index, piece)) }
            files.append(file)
        }
        // Every tensor covered exactly once by the pieces of all files.
        for tensor in manifest.tensors {
            let count = tensor.shape.reduce(1, *)
            let sorted = (pieces[tensor.name] ?? []).sorted { $0.piece.offset < $1.piece.offset }
            var next = 0
            for (_, piece) in sorted {
                guard piece.offset == next else { break }
                next += piece.count
            }
            guard next == count else {
                throw CheckpointError(.inconsistentTensor, path: directory.path, tensor: tensor.name,
                                      expected: "pieces covering its \(count) elements once", found: "coverage up to element \(next)")
            }
            pieces[tensor.name] = sorted
        }
        self.files = files
        self.pieces = pieces
    }

    /// The shape of `tensor`, or nil when the checkpoint has no such tensor.
    public func shape(of tensor: String) -> [Int]? { shapes[tensor] }

    /// Reads elements `elements` (row-major, within the tensor) of `tensor` in role `role` into `destination`.
    /// Throws `CheckpointError` `.tensorNotFound`, `.elementRangeOutOfBounds`.
    public func read(role: String, tensor: String, elements: Range<Int>, into destination: UnsafeMutableBufferPointer<Float>) throws {
        precondition(destination.count == elements.count, "CheckpointReader.read: destination holds \(destination.count), range has \(elements.count)")
        guard let shape = shapes[tensor], let list = pieces[tensor] else {
            throw CheckpointError.tensorNotFound(tensor, in: directory.path, available: shapes.keys)
        }
        let count = shape.reduce(1, *)
        guard elements.lowerBound >= 0, elements.upperBound <= count else {
            throw CheckpointError(.elementRangeOutOfBounds, path: directory.path, tensor: tensor,
                                  expected: "a range within 0..<\(count)", found: "\(elements.lowerBound)..<\(elements.upperBound)")
        }
        guard manifest.roles.contains(role) else {
            throw CheckpointError(.tensorNotFound, path: directory.path, tensor: role, expected: "a role: \(manifest.roles.joined(separator: ", "))",
                                  found: "'\(role)'")
        }
        for (shard, piece) in list {
            let overlap = elements.clamped(to: piece.offset..<(piece.offset + piece.count))
            if overlap.isEmpty { continue }
            let start = piece.at + overlap.lowerBound - piece.offset
            let local = (overlap.lowerBound - elements.lowerBound)..<(overlap.upperBound - elements.lowerBound)
            try files[shard].read(role, elements: start..<(start + overlap.count), into: UnsafeMutableBufferPointer(rebasing: destination[local]))
        }
    }

    /// The URL of shard file `index` (in manifest order).
    public func shardURL(_ index: Int) -> URL { directory.appendingPathComponent(manifest.shards[index].file) }

    /// Hashes shard file `index` with `read` in 4 MiB chunks (page cache only: the process's
    /// resident memory stays one chunk) and compares with the manifest's ``XXHash64`` (resume splits the files over the ranks; a checkpoint as `--model` checks them all). Returns the bytes hashed.
    /// Throws `CheckpointError` `.checksumMismatch` naming the file, `.unreadableFile`.
    @discardableResult
    public func verify(shard index: Int) throws -> Int {
        let shard = manifest.shards[index], path = shardURL(index).path
        let descriptor = try CheckpointTensors.open(path)
        defer { try? descriptor.close() }
        var hasher = XXHash64()
        let chunk = UnsafeMutableRawBufferPointer.allocate(byteCount: 1 << 22, alignment: 64)
        defer { chunk.deallocate() }
        var total = 0
        while true {
            let got: Int
            do { got = try descriptor.read(into: chunk, retryOnInterrupt: true) } catch let error as Errno {
                throw MappedFile.systemError(path, "read", code: error.rawValue)
            }
            if got == 0 { break }
            hasher.update(UnsafeRawBufferPointer(rebasing: chunk[0..<got]))
            total += got
        }
        let found = hasher.hexDigest
        guard found == shard.xxh64.lowercased() else {
            throw CheckpointError(.checksumMismatch, path: path,
                                  expected: "xxh64 \(shard.xxh64) (\(TrainingCheckpointFormat.manifestName))",
                                  found: "xxh64 \(found): the file was altered or damaged")
        }
        return total
    }
}
