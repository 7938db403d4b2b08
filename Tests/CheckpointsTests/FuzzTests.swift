import Foundation
import Testing
@testable import Checkpoints

/// Damaged checkpoints end in a typed error or a load, never a trap or a hang: seeded variants (bit flips,
/// extreme values written over header fields, truncation) of every GGUF and safetensors fixture are parsed
/// in-process and, when they parse, every tensor is read in full. A trap would kill the test process, so
/// the parsers must check every count, offset and product from the file (see docs/formats.md, "Damaged
/// files"). The public reports this replays are in docs/testing.md.
@Suite struct FuzzTests {
    /// The fixtures, relative to the package root: this suite's and ModelIOTests' (real-model layouts).
    static let fixtures = [
        "Tests/CheckpointsTests/Fixtures/gguf/types.gguf",
        "Tests/CheckpointsTests/Fixtures/gguf/aligned64_v2.gguf",
        "Tests/CheckpointsTests/Fixtures/safetensors/f32.safetensors",
        "Tests/CheckpointsTests/Fixtures/safetensors/mixed.safetensors",
        "Tests/CheckpointsTests/Fixtures/safetensors/bf16.safetensors",
        "Tests/CheckpointsTests/Fixtures/safetensors/sharded/model.safetensors.index.json",
        "Tests/ModelIOTests/Fixtures/tiny-llama/tiny-llama.gguf",
        "Tests/ModelIOTests/Fixtures/tiny-qwen2/tiny-qwen2.gguf",
        "Tests/ModelIOTests/Fixtures/tiny-llama/model.safetensors",
        "Tests/ModelIOTests/Fixtures/tiny-llama-bf16/model.safetensors",
    ]
    static let variantsPerFixture = 60
    /// Wall-clock bound for parsing and reading one variant (a fixture of at most 112 KB).
    static let secondsPerVariant = 2.0

    /// SplitMix64, so every variant is reproducible from its seed.
    struct Random {
        var state: UInt64
        mutating func next() -> UInt64 {
            state &+= 0x9E37_79B9_7F4A_7C15
            var z = state
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return z ^ (z >> 31)
        }
        mutating func below(_ bound: Int) -> Int { Int(next() % UInt64(max(bound, 1))) }
    }

    /// Values that break naive arithmetic on counts, lengths, offsets and shapes.
    static let extremes: [UInt64] = [0, 1, 0xFFFF_FFFF, 0x1_0000_0000, 0x7FFF_FFFF_FFFF_FFFF, 0x8000_0000_0000_0000,
                                     0xFFFF_FFFF_FFFF_FFFF, 0x4000_0000_0000_0000, 0x7FFF_FFFF, 0x8000_0000]

    /// Variant `seed` of `original`: the header region (where every count and offset lives) is hit most.
    static func mutate(_ original: [UInt8], seed: UInt64) -> [UInt8] {
        var random = Random(state: seed)
        var bytes = original
        let header = min(bytes.count, 2048)
        switch seed % 4 {
        case 0:  // a few bit flips in the header
            for _ in 0...random.below(8) { bytes[random.below(header)] ^= UInt8(1 << random.below(8)) }
        case 1:  // random bytes anywhere
            for _ in 0...random.below(16) { bytes[random.below(bytes.count)] = UInt8(truncatingIfNeeded: random.next()) }
        case 2:  // an extreme 8-byte value over a header field
            let value = extremes[random.below(extremes.count)]
            let at = random.below(max(1, header - 8))
            for k in 0..<8 where at + k < bytes.count { bytes[at + k] = UInt8(truncatingIfNeeded: value >> (8 * UInt64(k))) }
        default:  // truncation
            bytes.removeLast(1 + random.below(bytes.count - 1))
        }
        return bytes
    }

    /// Opens `url` as its kind and reads every tensor in full; returns the number of tensors read.
    static func loadAndRead(_ url: URL) throws -> Int {
        let source: any TensorSource
        switch url.pathExtension {
        case "gguf": source = try GGUFFile(url: url)
        case "json": source = try ShardedSafetensors(indexURL: url)
        default: source = try SafetensorsFile(url: url)
        }
        for (name, info) in source.tensors {
            var buffer = [Float](repeating: 0, count: info.elementCount)
            try buffer.withUnsafeMutableBufferPointer { try source.read(name, elements: 0..<info.elementCount, into: $0) }
        }
        return source.tensors.count
    }

    @Test(arguments: fixtures) func damagedFilesEndInAnErrorOrALoad(_ fixture: String) throws {
        let original = Fixtures.packageRoot.appendingPathComponent(fixture)
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("zero-sft-fuzz-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: folder) }
        // A sharded index is fuzzed beside intact copies of its shards.
        if original.pathExtension == "json" {
            for shard in try FileManager.default.contentsOfDirectory(atPath: original.deletingLastPathComponent().path)
            where shard.hasSuffix(".safetensors") {
                try FileManager.default.copyItem(at: original.deletingLastPathComponent().appendingPathComponent(shard),
                                                 to: folder.appendingPathComponent(shard))
            }
        }
        let bytes = [UInt8](try Data(contentsOf: original))
        #expect(try Self.loadAndRead(original) > 0, "the intact fixture loads")
        var outcomes: [String: Int] = [:]
        for index in 0..<Self.variantsPerFixture {
            let seed = UInt64(index) &* 0x2545_F491_4F6C_DD1D &+ UInt64(fixture.utf8.count)
            let url = folder.appendingPathComponent(original.lastPathComponent)
            try Data(Self.mutate(bytes, seed: seed)).write(to: url)
            let started = Date()
            do {
                _ = try Self.loadAndRead(url)
                outcomes["loaded", default: 0] += 1
            } catch let error as CheckpointError {
                outcomes["\(error.kind)", default: 0] += 1
                #expect(error.description.contains(folder.path), "seed \(seed): the error names the file: \(error)")
            } catch {
                Issue.record("seed \(seed) of \(fixture): an untyped error \(type(of: error)): \(error)")
            }
            let seconds = Date().timeIntervalSince(started)
            #expect(seconds < Self.secondsPerVariant, "seed \(seed) of \(fixture) took \(seconds) s")
        }
        #expect(outcomes.values.reduce(0, +) == Self.variantsPerFixture)
    }
}
