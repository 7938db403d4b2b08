import Foundation
import Testing
@testable import Checkpoints

/// The training-checkpoint format: xxHash64 against the reference's published vectors, and a folder
/// written by two "ranks" read back range by range across their files, damaged files named.
@Suite struct TrainingCheckpointFormatTests {
    /// XXH64 vectors of the reference implementation (xxhash.h; the same values are pinned by Go's
    /// pierrec/xxHash and Zig's std.hash.XxHash64 test suites).
    @Test func xxHash64MatchesTheReferenceVectors() {
        func hash(_ bytes: [UInt8], seed: UInt64 = 0) -> UInt64 { bytes.withUnsafeBytes { XXHash64.hash($0, seed: seed) } }
        #expect(hash([]) == 0xEF46_DB37_51D8_E999)
        #expect(hash(Array("a".utf8)) == 0xD24E_C4F1_A98C_6E5B)
        #expect(hash(Array("abc".utf8)) == 0x44BC_2CF5_AD77_0999)
        #expect(hash(Array("abcd".utf8)) == 0xDE03_27B0_D25D_92CC)
        #expect(hash(Array("Hello, World!".utf8)) == 0xC49A_ACF8_080F_E47F)
        #expect(hash(Array("Hello, World!".utf8), seed: 42) == 0xC2E0_FE28_B251_2846)
        let abc999 = Array(String(repeating: "abc", count: 999).utf8), abcd1000 = Array(String(repeating: "abcd", count: 1000).utf8)
        #expect(hash(abc999) == 0x933E_B856_1397_6467)
        #expect(hash(abcd1000) == 0x2052_19D3_8E88_98BC)
        // Any split into updates gives the one-shot digest.
        for split in [1, 7, 20, 31, 32, 33, 40, 64, 100, 2996] {
            var hasher = XXHash64()
            abc999.withUnsafeBytes { bytes in
                var start = 0
                while start < bytes.count {
                    let end = min(bytes.count, start + split)
                    hasher.update(UnsafeRawBufferPointer(rebasing: bytes[start..<end]))
                    start = end
                }
            }
            #expect(hasher.digest == 0x933E_B856_1397_6467, "split \(split)")
        }
    }

    /// Not a bound (the machine is shared): the figure docs/checkpoints.md quotes.
    @Test func xxHash64Throughput() {
        let bytes = UnsafeMutableRawBufferPointer.allocate(byteCount: 256 << 20, alignment: 64)
        defer { bytes.deallocate() }
        for i in 0..<(bytes.count / 8) { bytes.storeBytes(of: UInt64(i) &* 0x9E37_79B9_7F4A_7C15, toByteOffset: i * 8, as: UInt64.self) }
        let clock = ContinuousClock()
        var digest: UInt64 = 0
        let elapsed = clock.measure { digest = XXHash64.hash(UnsafeRawBufferPointer(bytes)) }
        let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
        print("xxh64: 256 MiB in \(seconds) s = \(Double(bytes.count) / seconds / 1e6) MB/s (digest \(String(digest, radix: 16)))")
        #expect(digest != 0)
    }

    /// A tensor of 10 × 3 and one of 5, split over 2 ranks as ZeRO splits a unit of 35 elements
    /// (18 per rank, one of padding): the reader returns any range, across the files.
    func writeFolder(_ directory: URL) throws -> [Float] {
        let values = (0..<35).map { Float($0) + 0.5 }
        let padded = values + [0]
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        var shards: [CheckpointManifest.Shard] = []
        for rank in 0..<2 {
            let owned = (rank * 18)..<((rank + 1) * 18)
            var pieces: [CheckpointPiece] = []
            for (name, range) in [("a.weight", 0..<30), ("b.bias", 30..<35)] {
                let overlap = owned.clamped(to: range)
                if !overlap.isEmpty {
                    pieces.append(CheckpointPiece(tensor: name, offset: overlap.lowerBound - range.lowerBound, count: overlap.count,
                                                  at: overlap.lowerBound - owned.lowerBound))
                }
            }
            let slice = Array(padded[owned]), moments = slice.map { $0 * 2 }, squares = slice.map { $0 * 3 }
            let name = TrainingCheckpointFormat.shardName(rank: rank, ranks: 2)
            let written = try slice.withUnsafeBufferPointer { p in
                try moments.withUnsafeBufferPointer { m in
                    try squares.withUnsafeBufferPointer { v in
                        try TrainingCheckpointWriter.writeShard(to: directory.appendingPathComponent(name), metadata: ["rank": "\(rank)"],
                                                                pieces: pieces, roles: [("params", [p]), ("exp_avg", [m]), ("exp_avg_sq", [v])])
                    }
                }
            }
            shards.append(.init(file: name, rank: rank, bytes: written.bytes, xxh64: written.xxh64))
        }
        let manifest = CheckpointManifest(step: 3, stage: 3, ranks: 2,
                                          tensors: [.init(name: "a.weight", shape: [10, 3]), .init(name: "b.bias", shape: [5])],
                                          shards: shards, files: [])
        struct Envelope: Encodable { var checkpoint: CheckpointManifest }
        try JSONEncoder().encode(Envelope(checkpoint: manifest))
            .write(to: directory.appendingPathComponent(TrainingCheckpointFormat.manifestName))
        try Data().write(to: directory.appendingPathComponent(TrainingCheckpointFormat.completionMarkerName))
        return values
    }

    func scratch() throws -> URL {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("zero-sft-ckpt-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
        return url
    }

    @Test func readsAnyRangeAcrossRankFiles() throws {
        let directory = try scratch()
        defer { try? FileManager.default.removeItem(at: directory) }
        let values = try writeFolder(directory)
        let reader = try CheckpointReader(directory: directory)
        #expect(reader.manifest.step == 3 && reader.manifest.shards.count == 2)
        for index in 0..<2 { try reader.verify(shard: index) }
        // The shard files are plain safetensors: any reader sees three 1-D F32 tensors and the metadata.
        let file = try SafetensorsFile(url: reader.shardURL(1))
        #expect(file.tensors["params"]?.shape == [18] && file.metadata["format"] == TrainingCheckpointFormat.shardFormat)
        for (role, scale) in [("params", Float(1)), ("exp_avg", 2), ("exp_avg_sq", 3)] {
            for range in [0..<30, 10..<25, 17..<19, 29..<30] {
                var out = [Float](repeating: -1, count: range.count)
                try out.withUnsafeMutableBufferPointer { try reader.read(role: role, tensor: "a.weight", elements: range, into: $0) }
                #expect(out == values[range].map { $0 * scale }, "\(role) a.weight \(range)")
            }
            var bias = [Float](repeating: -1, count: 5)
            try bias.withUnsafeMutableBufferPointer { try reader.read(role: role, tensor: "b.bias", elements: 0..<5, into: $0) }
            #expect(bias == values[30..<35].map { $0 * scale })
        }
        #expect(throws: CheckpointError.self) {
            var out = [Float](repeating: 0, count: 2)
            try out.withUnsafeMutableBufferPointer { try reader.read(role: "params", tensor: "a.weight", elements: 29..<31, into: $0) }
        }
    }

    @Test func aFlippedByteAndAShortFileAreNamed() throws {
        let directory = try scratch()
        defer { try? FileManager.default.removeItem(at: directory) }
        _ = try writeFolder(directory)
        let second = directory.appendingPathComponent(TrainingCheckpointFormat.shardName(rank: 1, ranks: 2))
        var bytes = try Data(contentsOf: second)
        bytes[bytes.count - 7] ^= 0x10
        try bytes.write(to: second)
        let reader = try CheckpointReader(directory: directory)
        try reader.verify(shard: 0)
        do {
            try reader.verify(shard: 1)
            Issue.record("a flipped byte was not detected")
        } catch let error as CheckpointError {
            #expect(error.kind == .checksumMismatch && error.path == second.path, "\(error)")
        }
        try bytes.prefix(bytes.count - 4).write(to: second)
        do {
            _ = try CheckpointReader(directory: directory)
            Issue.record("a short file was not detected")
        } catch let error as CheckpointError {
            #expect(error.kind == .truncated && error.path == second.path, "\(error)")
        }
        try FileManager.default.removeItem(at: directory.appendingPathComponent(TrainingCheckpointFormat.completionMarkerName))
        #expect { _ = try CheckpointReader(directory: directory) } throws: { ($0 as? CheckpointError)?.kind == .incompleteCheckpoint }
    }

    @Test func latestSkipsIncompleteFoldersAndTemporaries() throws {
        let directory = try scratch()
        defer { try? FileManager.default.removeItem(at: directory) }
        _ = try writeFolder(directory.appendingPathComponent("checkpoint-3"))
        _ = try writeFolder(directory.appendingPathComponent("checkpoint-12"))
        try FileManager.default.removeItem(at: directory.appendingPathComponent("checkpoint-12/COMPLETE"))
        try FileManager.default.createDirectory(at: directory.appendingPathComponent(".checkpoint-20.tmp-abc"), withIntermediateDirectories: true)
        let (latest, skipped) = TrainingCheckpointDirectory.latest(in: directory)
        #expect(latest?.step == 3)
        #expect(skipped.map(\.step) == [12] && skipped[0].problem?.contains("COMPLETE") == true)
        #expect(try TrainingCheckpointDirectory.removeTemporaries(in: directory) == [".checkpoint-20.tmp-abc"])
        _ = try writeFolder(directory.appendingPathComponent("checkpoint-7"))
        _ = try writeFolder(directory.appendingPathComponent("checkpoint-9"))
        #expect(try TrainingCheckpointDirectory.keepLast(2, in: directory) == [3])
        #expect(TrainingCheckpointDirectory.entries(in: directory).map(\.step) == [7, 9, 12])
    }
}
