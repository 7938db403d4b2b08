import Foundation
import Testing
@testable import Checkpoints

/// SafetensorsFile and ShardedSafetensors against files written by the `safetensors` package.
@Suite struct SafetensorsTests {
    @Test(arguments: ["f32", "f16", "bf16", "mixed"])
    func readsEveryTensorLikeTorch(stem: String) throws {
        let manifest = try Fixtures.json(Manifest.self, "safetensors/\(stem).json")
        let url = Fixtures.url("safetensors/\(stem).safetensors")
        let file = try SafetensorsFile(url: url)
        #expect(file.metadata == manifest.metadata ?? [:])
        #expect(Set(file.tensors.keys) == Set(manifest.tensors.map(\.name)))
        #expect(file.tensorNames.count == manifest.tensors.count)
        for entry in manifest.tensors {
            let info = try file.info(entry.name)
            #expect(info.shape == entry.shape, "\(stem) \(entry.name) shape")
            let golden = try Fixtures.floats("safetensors/\(entry.golden)")
            expectBitwiseEqual(try file.read(entry.name), golden, "\(stem) \(entry.name) (torch.\(entry.dtype ?? "?")) whole read")
            for range in interestingRanges(count: info.elementCount, block: 1) {
                expectBitwiseEqual(try file.read(entry.name, elements: range), golden[range], "\(stem) \(entry.name) elements \(range)")
            }
        }
    }

    @Test func dtypesAndScalarShapes() throws {
        let file = try SafetensorsFile(url: Fixtures.url("safetensors/bf16.safetensors"))
        #expect(file.tensors["scalar"] == TensorInfo(name: "scalar", shape: [], dtype: .bf16))
        #expect(file.tensors["scalar"]?.elementCount == 1)
        #expect(file.tensors["empty"]?.shape == [0, 3])
        #expect(file.tensors["empty"]?.elementCount == 0)
        #expect(try file.read("empty").isEmpty)
        let mixed = try SafetensorsFile(url: Fixtures.url("safetensors/mixed.safetensors"))
        let dtypes = Dictionary(uniqueKeysWithValues: mixed.tensors.map { ($0.key, $0.value.dtype) })
        #expect(dtypes == ["f64": .f64, "i64": .i64, "i32": .i32, "i16": .i16, "i8": .i8, "u8": .u8, "bool": .bool, "f16": .f16])
        #expect(try mixed.read("bool") == [1, 0, 1])
        #expect(try mixed.read("i64") == [Float(-(1 << 40)), 0, 16_777_216], "2^24+1 rounds to nearest Float")
    }

    @Test func shardedIndex() throws {
        struct Golden: Decodable { var tensors: [ManifestTensor] }
        let golden = try Fixtures.json(Golden.self, "safetensors/sharded/golden.json")
        let index = Fixtures.url("safetensors/sharded/model.safetensors.index.json")
        let sharded = try ShardedSafetensors(indexURL: index)
        #expect(sharded.shards.count == 2)
        #expect(sharded.weightMap["lm_head.weight"] == "model-00002-of-00002.safetensors")
        #expect(sharded.metadata["total_size"] == "268")
        #expect(Set(sharded.tensors.keys) == Set(golden.tensors.map(\.name)))
        for entry in golden.tensors {
            #expect(sharded.tensors[entry.name]?.shape == entry.shape)
            let values = try Fixtures.floats("safetensors/sharded/\(entry.golden)")
            expectBitwiseEqual(try sharded.read(entry.name), values, "sharded \(entry.name)")
            expectBitwiseEqual(try sharded.read(entry.name, elements: 1..<3), values[1..<3], "sharded \(entry.name) 1..<3")
        }
        // The same checkpoint through openTensorSource: the directory and the index file.
        for url in [index.deletingLastPathComponent(), index] {
            let source = try openTensorSource(at: url)
            #expect(source is ShardedSafetensors, "\(url.lastPathComponent)")
            #expect(try source.read("lm_head.weight") == (0..<12).map(Float.init))
        }
        expectCheckpointError(.tensorNotFound, path: index.path, tensor: "missing") { _ = try sharded.read("missing") }
    }

    @Test func openTensorSourceOnFilesAndDirectories() throws {
        let directory = try TemporaryDirectory()
        defer { directory.cleanup() }
        #expect(try openTensorSource(at: Fixtures.url("safetensors/f32.safetensors")) is SafetensorsFile)
        try FileManager.default.copyItem(at: Fixtures.url("safetensors/f16.safetensors"), to: directory.file("model.safetensors"))
        let source = try openTensorSource(at: directory.url)
        #expect(source is SafetensorsFile)
        #expect(source.tensors["model.norm.weight"]?.dtype == .f16)
        let ggufDirectory = try TemporaryDirectory("gguf")
        defer { ggufDirectory.cleanup() }
        try FileManager.default.copyItem(at: Fixtures.url("gguf/types.gguf"), to: ggufDirectory.file("model.gguf"))
        #expect(try openTensorSource(at: ggufDirectory.url) is GGUFFile, "a directory holding one .gguf")
        let empty = try TemporaryDirectory("empty")
        defer { empty.cleanup() }
        expectCheckpointError(.unreadableFile, path: empty.url.path, mentions: ["model.safetensors"]) {
            _ = try openTensorSource(at: empty.url)
        }
        expectCheckpointError(.unreadableFile, path: empty.file("nothing").path) { _ = try openTensorSource(at: empty.file("nothing")) }
    }

    // MARK: - Bad input

    @Test func truncatedDataNamesTheTensor() throws {
        let directory = try TemporaryDirectory()
        defer { directory.cleanup() }
        let intact = try SafetensorsFile(url: Fixtures.url("safetensors/f32.safetensors"))
        let last = try #require(intact.tensorNames.last)
        let bytes = try fixtureBytes("safetensors/f32.safetensors")
        let url = directory.file("truncated.safetensors")
        try writeBytes(Array(bytes.dropLast(2)), to: url)
        expectCheckpointError(.truncated, path: url.path, tensor: last, mentions: ["data_offsets"]) { _ = try SafetensorsFile(url: url) }

        let short = directory.file("short.safetensors")
        try writeBytes([1, 2, 3], to: short)
        expectCheckpointError(.truncated, path: short.path, mentions: ["at least 8 bytes", "a file of 3 bytes"]) {
            _ = try SafetensorsFile(url: short)
        }
    }

    @Test func headerLengthPastEndOfFile() throws {
        let directory = try TemporaryDirectory()
        defer { directory.cleanup() }
        var bytes = try fixtureBytes("safetensors/f32.safetensors")
        let claimed = UInt64(bytes.count)  // the header cannot be as long as the whole file
        withUnsafeBytes(of: claimed.littleEndian) { bytes.replaceSubrange(0..<8, with: $0) }
        let url = directory.file("long-header.safetensors")
        try writeBytes(bytes, to: url)
        expectCheckpointError(.truncated, path: url.path, mentions: ["a header of \(claimed) bytes", "a file of \(bytes.count) bytes"]) {
            _ = try SafetensorsFile(url: url)
        }
    }

    @Test func garbageAndWrongFormat() throws {
        let directory = try TemporaryDirectory()
        defer { directory.cleanup() }
        let garbage = directory.file("garbage.safetensors")
        try writeBytes(withUnsafeBytes(of: UInt64(8).littleEndian) { Array($0) } + Array("PK\u{3}\u{4}abcd".utf8), to: garbage)
        expectCheckpointError(.badMagic, path: garbage.path, mentions: ["'{'", "'PK..abcd'"]) { _ = try SafetensorsFile(url: garbage) }

        let badJSON = directory.file("bad-json.safetensors")
        try writeBytes(safetensorsBytes(header: "{\"a\": {\"dtype\": ", data: []), to: badJSON)
        expectCheckpointError(.malformedHeader, path: badJSON.path) { _ = try SafetensorsFile(url: badJSON) }

        let wrongTypes = directory.file("wrong-types.safetensors")
        try writeBytes(safetensorsBytes(header: #"{"w":{"dtype":"F32","shape":"2x3","data_offsets":[0,24]}}"#, data: Array(repeating: 0, count: 24)), to: wrongTypes)
        expectCheckpointError(.malformedHeader, path: wrongTypes.path, tensor: "w", mentions: ["shape"]) { _ = try SafetensorsFile(url: wrongTypes) }

        expectCheckpointError(.badMagic, path: Fixtures.url("gguf/types.gguf").path, mentions: ["GGUF"]) {
            _ = try SafetensorsFile(url: Fixtures.url("gguf/types.gguf"))
        }
    }

    @Test func offsetsInconsistentWithShape() throws {
        let directory = try TemporaryDirectory()
        defer { directory.cleanup() }
        let url = directory.file("inconsistent.safetensors")
        try writeBytes(safetensorsBytes(header: #"{"w":{"dtype":"F32","shape":[2,3],"data_offsets":[0,20]}}"#,
                                        data: Array(repeating: 0, count: 24)), to: url)
        expectCheckpointError(.inconsistentTensor, path: url.path, tensor: "w", mentions: ["6 × 4 bytes", "spanning 20 bytes"]) {
            _ = try SafetensorsFile(url: url)
        }
        let overlap = directory.file("overlap.safetensors")
        try writeBytes(safetensorsBytes(header: #"{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},"b":{"dtype":"F32","shape":[4],"data_offsets":[8,24]}}"#,
                                        data: Array(repeating: 0, count: 24)), to: overlap)
        expectCheckpointError(.overlappingTensors, path: overlap.path, tensor: "b", mentions: ["'a'"]) { _ = try SafetensorsFile(url: overlap) }

        let unsupported = directory.file("fp8.safetensors")
        try writeBytes(safetensorsBytes(header: #"{"f8":{"dtype":"F8_E4M3","shape":[8],"data_offsets":[0,8]}}"#,
                                        data: Array(repeating: 0, count: 8)), to: unsupported)
        expectCheckpointError(.unsupportedDType, path: unsupported.path, tensor: "f8", mentions: ["F8_E4M3"]) {
            _ = try SafetensorsFile(url: unsupported)
        }
    }

    @Test func shardErrorsNameTheShard() throws {
        let directory = try TemporaryDirectory()
        defer { directory.cleanup() }
        let source = Fixtures.url("safetensors/sharded")
        for name in ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"] {
            try FileManager.default.copyItem(at: source.appendingPathComponent(name), to: directory.file(name))
        }
        let index = directory.file("model.safetensors.index.json")
        try Data(#"{"metadata":{"total_size":1},"weight_map":{"lm_head.weight":"model-00002-of-00002.safetensors","model.norm.weight":"model-00003-of-00003.safetensors"}}"#.utf8).write(to: index)
        expectCheckpointError(.unreadableFile, path: directory.file("model-00003-of-00003.safetensors").path) {
            _ = try ShardedSafetensors(indexURL: index)
        }
        try Data(#"{"weight_map":{"lm_head.weight":"model-00001-of-00002.safetensors"}}"#.utf8).write(to: index)
        expectCheckpointError(.tensorNotFound, path: directory.file("model-00001-of-00002.safetensors").path, tensor: "lm_head.weight") {
            _ = try ShardedSafetensors(indexURL: index)
        }
        try Data(#"{"metadata":{}}"#.utf8).write(to: index)
        expectCheckpointError(.malformedHeader, path: index.path, mentions: ["weight_map"]) { _ = try ShardedSafetensors(indexURL: index) }
    }
}

/// A safetensors file from a raw header string (padded to 8 bytes as the format requires) and data bytes.
func safetensorsBytes(header: String, data: [UInt8]) -> [UInt8] {
    var headerBytes = Array(header.utf8)
    headerBytes += Array(repeating: UInt8(ascii: " "), count: (8 - headerBytes.count % 8) % 8)
    return withUnsafeBytes(of: UInt64(headerBytes.count).littleEndian) { Array($0) } + headerBytes + data
}
