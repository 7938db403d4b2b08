import Foundation
import Testing
@testable import Checkpoints

/// GGUFFile against files written by the `gguf` package and its dequantisation (gguf.quants).
@Suite struct GGUFTests {
    let manifest: Manifest
    let file: GGUFFile

    init() throws {
        manifest = try Fixtures.json(Manifest.self, "gguf/types.json")
        file = try GGUFFile(url: Fixtures.url("gguf/types.gguf"))
    }

    @Test func headerAndTensorTable() throws {
        #expect(file.version == 3)
        #expect(file.architecture == "testarch")
        #expect(file.alignment == 32)
        #expect(file.dataOffset % 32 == 0)
        #expect(file.tensors.count == manifest.tensors.count)
        #expect(file.tensorNames == manifest.tensors.map(\.name), "tensor names in file order")
        for entry in manifest.tensors {
            let info = try #require(file.tensors[entry.name], "tensor \(entry.name) missing")
            #expect(info.shape == entry.shape, "\(entry.name): shape in HF order")
            #expect(info.dtype.rawValue == entry.dtype, "\(entry.name): dtype")
            #expect(info.elementCount == entry.shape.reduce(1, *))
            let range = try #require(file.byteRange(of: entry.name))
            #expect(range.count == info.dtype.byteCount(elementCount: info.elementCount))
            #expect((range.lowerBound - file.dataOffset) % file.alignment == 0, "\(entry.name): aligned offset")
        }
    }

    /// Every type dequantises bit-identically to gguf.quants.dequantize (ggml's reference), K-quants included.
    @Test func everyTypeDequantisesExactlyLikeGGML() throws {
        var typesSeen = Set<TensorDType>()
        for entry in manifest.tensors {
            let golden = try Fixtures.floats("gguf/\(entry.golden)")
            let values = try file.read(entry.name)
            expectBitwiseEqual(values, golden, "\(entry.name) (\(entry.dtype ?? "?")) whole read")
            typesSeen.insert(try file.info(entry.name).dtype)
        }
        let required: Set<TensorDType> = [.f32, .f16, .bf16, .f64, .i8, .i16, .i32, .i64,
                                          .q4_0, .q4_1, .q5_0, .q5_1, .q8_0, .q2_k, .q3_k, .q4_k, .q5_k, .q6_k, .q8_k]
        #expect(typesSeen == required, "fixture covers every GGUF type we read")
    }

    @Test func rangedReadsEqualSlicesOfTheWholeRead() throws {
        for entry in manifest.tensors {
            let info = try file.info(entry.name)
            let golden = try Fixtures.floats("gguf/\(entry.golden)")
            for range in interestingRanges(count: info.elementCount, block: info.dtype.elementsPerBlock) {
                let values = try file.read(entry.name, elements: range)
                expectBitwiseEqual(values, golden[range], "\(entry.name) elements \(range)")
            }
        }
    }

    @Test func rangedReadsWriteOnlyTheirDestination() throws {
        // A destination inside a larger buffer: the bytes around it stay untouched.
        let name = "kquant.q4_k"
        let golden = try Fixtures.floats("gguf/types.\(name).f32")
        var buffer = [Float](repeating: -7, count: 300)
        try buffer.withUnsafeMutableBufferPointer { whole in
            try file.read(name, elements: 250..<530, into: UnsafeMutableBufferPointer(rebasing: whole[10..<290]))
        }
        expectBitwiseEqual(Array(buffer[10..<290]), golden[250..<530], "\(name) 250..<530 in place")
        #expect(buffer[0..<10].allSatisfy { $0 == -7 } && buffer[290...].allSatisfy { $0 == -7 })
    }

    @Test func metadataOfEveryValueType() throws {
        let m = file.metadata
        #expect(m["test.uint8"] == .uint8(200))
        #expect(m["test.int8"] == .int8(-100))
        #expect(m["test.uint16"] == .uint16(60000))
        #expect(m["test.int16"] == .int16(-30000))
        #expect(m["test.uint32"] == .uint32(4_000_000_000))
        #expect(m["test.int32"] == .int32(-2_000_000_000))
        #expect(m["test.uint64"] == .uint64(1 << 63 + 5))
        #expect(m["test.int64"] == .int64(-(1 << 62)))
        #expect(m["test.float32"] == .float32(3.25))
        #expect(m["test.float64"] == .float64(-1.0e300))
        #expect(m["test.bool"] == .bool(true))
        #expect(m["test.string"] == .string("héllo ✓"))
        #expect(m["test.empty_string"] == .string(""))
        #expect(m["test.array.int32"] == .array([.int32(1), .int32(-2), .int32(3)]))
        #expect(m["test.array.uint8"] == .array([.uint8(0), .uint8(7), .uint8(255)]))
        #expect(m["test.array.float32"] == .array([.float32(0.5), .float32(-1.5)]))
        #expect(m["test.array.float64"] == .array([.float64(0.1)]))
        #expect(m["test.array.string"] == .array([.string("a"), .string("bc"), .string("")]))
        #expect(m["test.array.bool"] == .array([.bool(true), .bool(false)]))
        #expect(m["test.array.nested"] == .array([.array([.int32(1), .int32(2)]), .array([.int32(3)])]))
        #expect(m["general.architecture"] == .string("testarch"))
        #expect(file.metadataKeys.first == "general.architecture", "keys in file order")
        #expect(Set(file.metadataKeys) == Set(m.keys))

        // Typed accessors.
        #expect(m["test.uint8"]?.int == 200)
        #expect(m["test.uint32"]?.int == 4_000_000_000)
        #expect(m["test.uint64"]?.int == nil, "2^63+5 does not fit in Int")
        #expect(m["test.uint64"]?.double == 9223372036854775813.0)
        #expect(m["test.int64"]?.int == -(1 << 62))
        #expect(m["test.float32"]?.double == 3.25)
        #expect(m["test.float32"]?.int == nil)
        #expect(m["test.int16"]?.float == -30000)
        #expect(m["test.string"]?.string == "héllo ✓")
        #expect(m["test.bool"]?.bool == true)
        #expect(m["test.array.int32"]?.intArray == [1, -2, 3])
        #expect(m["test.array.uint8"]?.intArray == [0, 7, 255])
        #expect(m["test.array.float32"]?.floatArray == [0.5, -1.5])
        #expect(m["test.array.int32"]?.floatArray == [1, -2, 3])
        #expect(m["test.array.float64"]?.doubleArray == [0.1])
        #expect(m["test.array.string"]?.stringArray == ["a", "bc", ""])
        #expect(m["test.array.string"]?.intArray == nil)
        #expect(m["test.array.nested"]?.array?.count == 2)
        #expect(m["test.string"]?.typeName == "string")
    }

    @Test func customAlignmentAndVersion2() throws {
        struct Expected: Decodable {
            var alignment: Int
            var version: Int
            var absolute_offsets: [String: Int]
            var a: [Float]
            var b_golden: String
        }
        let expected = try Fixtures.json(Expected.self, "gguf/aligned64_v2.json")
        let file = try GGUFFile(url: Fixtures.url("gguf/aligned64_v2.gguf"))
        #expect(file.version == expected.version)
        #expect(file.alignment == 64)
        #expect(file.metadata["general.alignment"]?.int == 64)
        for (name, offset) in expected.absolute_offsets {
            #expect(file.byteRange(of: name)?.lowerBound == offset, "\(name): absolute offset as the gguf package reads it")
        }
        #expect(try file.read("a") == expected.a)
        expectBitwiseEqual(try file.read("b"), try Fixtures.floats("gguf/\(expected.b_golden)"), "aligned b (Q8_0)")
        #expect(try file.info("b").shape == [2, 32])
    }

    @Test func openTensorSourceRecognisesGGUF() throws {
        let source = try openTensorSource(at: Fixtures.url("gguf/types.gguf"))
        #expect(source is GGUFFile)
        #expect(source.tensors.count == manifest.tensors.count)
        #expect(source.location == Fixtures.url("gguf/types.gguf").path)
    }

    // MARK: - Bad input

    @Test func wrongMagic() throws {
        let directory = try TemporaryDirectory()
        defer { directory.cleanup() }
        var bytes = try fixtureBytes("gguf/types.gguf")
        bytes.replaceSubrange(0..<4, with: Array("GGML".utf8))
        let url = directory.file("wrong-magic.gguf")
        try writeBytes(bytes, to: url)
        expectCheckpointError(.badMagic, path: url.path, mentions: ["expected GGUF magic 'GGUF'", "found 'GGML'"]) {
            _ = try GGUFFile(url: url)
        }
        let empty = directory.file("empty.gguf")
        try writeBytes([], to: empty)
        expectCheckpointError(.badMagic, path: empty.path, mentions: ["an empty file"]) { _ = try GGUFFile(url: empty) }
    }

    @Test func unsupportedVersions() throws {
        let directory = try TemporaryDirectory()
        defer { directory.cleanup() }
        var bytes = try fixtureBytes("gguf/types.gguf")
        for (version, phrase) in [(UInt32(1), "version 1"), (4, "version 4"), (UInt32(3).byteSwapped, "big-endian")] {
            withUnsafeBytes(of: version.littleEndian) { bytes.replaceSubrange(4..<8, with: $0) }
            let url = directory.file("v\(version).gguf")
            try writeBytes(bytes, to: url)
            expectCheckpointError(.unsupportedVersion, path: url.path, mentions: [phrase]) { _ = try GGUFFile(url: url) }
        }
    }

    @Test func truncatedTensorDataNamesTheTensor() throws {
        let directory = try TemporaryDirectory()
        defer { directory.cleanup() }
        let bytes = try fixtureBytes("gguf/types.gguf")
        let last = try #require(file.tensorNames.last)
        let lastRange = try #require(file.byteRange(of: last))
        let url = directory.file("truncated.gguf")
        try writeBytes(Array(bytes[..<(lastRange.upperBound - 1)]), to: url)
        expectCheckpointError(.truncated, path: url.path, tensor: last, mentions: ["\(lastRange.count) bytes of tensor data"]) {
            _ = try GGUFFile(url: url)
        }
        // Cut inside the metadata: the error says what was being read.
        let header = directory.file("truncated-header.gguf")
        try writeBytes(Array(bytes[..<600]), to: header)
        expectCheckpointError(.truncated, path: header.path, mentions: ["metadata entry 17", "a file of 600 bytes"]) {
            _ = try GGUFFile(url: header)
        }
        // Cut so early that the declared tensor count cannot fit.
        try writeBytes(Array(bytes[..<100]), to: header)
        expectCheckpointError(.truncated, path: header.path, mentions: ["tensor count", "found \(file.tensors.count), with 84 bytes left in a file of 100 bytes"]) {
            _ = try GGUFFile(url: header)
        }
    }

    @Test func unknownGGMLTypeNamesTheTensorAndTypeID() throws {
        let directory = try TemporaryDirectory()
        defer { directory.cleanup() }
        var bytes = try fixtureBytes("gguf/types.gguf")
        // Find the tensor info of "quant.q4_1": u64 name length, name, u32 n_dims, u64 ne[n_dims], u32 type.
        let name = "quant.q4_1"
        var encoded = withUnsafeBytes(of: UInt64(name.utf8.count).littleEndian) { Array($0) }
        encoded += Array(name.utf8)
        let start = try #require(firstIndex(of: encoded, in: bytes), "tensor info of \(name) not found")
        let typeOffset = start + encoded.count + 4 + 2 * 8
        #expect(bytes[typeOffset] == 3, "Q4_1 is ggml type 3")
        bytes[typeOffset] = 16  // IQ2_XXS
        let url = directory.file("unknown-type.gguf")
        try writeBytes(bytes, to: url)
        expectCheckpointError(.unsupportedDType, path: url.path, tensor: name, mentions: ["ggml type id 16", "IQ2_XXS"]) {
            _ = try GGUFFile(url: url)
        }
        bytes[typeOffset] = 200
        try writeBytes(bytes, to: url)
        expectCheckpointError(.unsupportedDType, path: url.path, tensor: name, mentions: ["ggml type id 200"]) {
            _ = try GGUFFile(url: url)
        }
    }

    @Test func garbageCountsAreRejectedWithoutHugeAllocations() throws {
        let directory = try TemporaryDirectory()
        defer { directory.cleanup() }
        var bytes = try fixtureBytes("gguf/types.gguf")
        withUnsafeBytes(of: UInt64.max.littleEndian) { bytes.replaceSubrange(8..<16, with: $0) }
        let url = directory.file("garbage-count.gguf")
        try writeBytes(bytes, to: url)
        expectCheckpointError(.truncated, path: url.path, mentions: ["tensor count"]) { _ = try GGUFFile(url: url) }
    }

    @Test func readErrorsNameTheFileAndTensor() throws {
        let path = Fixtures.url("gguf/types.gguf").path
        expectCheckpointError(.tensorNotFound, path: path, tensor: "no.such.tensor") { _ = try file.read("no.such.tensor") }
        expectCheckpointError(.elementRangeOutOfBounds, path: path, tensor: "quant.q8_0", mentions: ["0..<384", "380..<390"]) {
            _ = try file.read("quant.q8_0", elements: 380..<390)
        }
    }
}

func firstIndex(of needle: [UInt8], in haystack: [UInt8]) -> Int? {
    guard needle.count <= haystack.count else { return nil }
    return (0...(haystack.count - needle.count)).first { haystack[$0..<($0 + needle.count)].elementsEqual(needle) }
}
