import Foundation
import Testing
@testable import Checkpoints

/// SafetensorsWriter against files written by `safetensors.torch.save_file` from the same values.
@Suite struct SafetensorsWriterTests {
    struct WriterManifest: Decodable {
        struct Tensor: Decodable { var name: String; var shape: [Int]; var source: String }
        var metadata: [String: String]
        var tensors: [Tensor]
        var references: [String: String]
    }

    let manifest: WriterManifest
    let sources: [(name: String, shape: [Int], values: [Float])]

    init() throws {
        manifest = try Fixtures.json(WriterManifest.self, "writer/writer.json")
        sources = try manifest.tensors.map { ($0.name, $0.shape, try Fixtures.floats("writer/\($0.source)")) }
    }

    /// Calls `body` with the sources as the writer's argument (pointers valid only inside `body`).
    func withTensors<R>(_ body: ([(name: String, shape: [Int], data: UnsafeBufferPointer<Float>)]) throws -> R) rethrows -> R {
        func nest(_ index: Int, _ built: [(name: String, shape: [Int], data: UnsafeBufferPointer<Float>)]) throws -> R {
            guard index < sources.count else { return try body(built) }
            return try sources[index].values.withUnsafeBufferPointer { buffer in
                try nest(index + 1, built + [(sources[index].name, sources[index].shape, buffer)])
            }
        }
        return try nest(0, [])
    }

    /// For one dtype, the file equals the safetensors package's byte for byte (header order, padding,
    /// offsets, and F16/BF16 rounding of every value, including halfway cases and overflow).
    @Test(arguments: [TensorDType.f32, .f16, .bf16])
    func byteIdenticalToTheSafetensorsPackage(dtype: TensorDType) throws {
        let directory = try TemporaryDirectory()
        defer { directory.cleanup() }
        let url = directory.file("ours.safetensors")
        try withTensors { try SafetensorsWriter.write($0, dtype: dtype, metadata: manifest.metadata, to: url) }
        let ours = [UInt8](try Data(contentsOf: url))
        let reference = try fixtureBytes("writer/\(manifest.references[dtype.rawValue]!)")
        if ours != reference {
            let firstDifference = zip(ours, reference).enumerated().first { $0.element.0 != $0.element.1 }?.offset
            let headerLength = Int(reference.prefix(8).enumerated().reduce(UInt64(0)) { $0 | UInt64($1.element) << (8 * $1.offset) })
            Issue.record("""
                \(dtype): \(ours.count) bytes vs reference \(reference.count); first difference at byte \(firstDifference.map(String.init) ?? "end") \
                (header is bytes 8..<\(8 + headerLength))
                ours:      \(String(decoding: ours.prefix(8 + headerLength).dropFirst(8), as: UTF8.self))
                reference: \(String(decoding: reference.prefix(8 + headerLength).dropFirst(8), as: UTF8.self))
                """)
        }
        #expect(directory.contents() == ["ours.safetensors"], "no temporary files left behind")
    }

    /// The streaming writer, fed in odd-sized chunks, writes the same bytes as the package, asking for
    /// each tensor's elements in order and in file order.
    @Test(arguments: [TensorDType.f32, .bf16])
    func streamingWriterIsByteIdentical(dtype: TensorDType) throws {
        let directory = try TemporaryDirectory()
        defer { directory.cleanup() }
        let url = directory.file("streamed.safetensors")
        let byName = Dictionary(uniqueKeysWithValues: sources.map { ($0.name, $0.values) })
        var requests: [(String, Range<Int>)] = []
        try SafetensorsWriter.write(layout: sources.map { ($0.name, $0.shape) }, dtype: dtype, metadata: manifest.metadata,
                                    to: url, chunkElements: 5) { name, elements, destination in
            requests.append((name, elements))
            _ = destination.update(fromContentsOf: byName[name]![elements])
        }
        let reference = try fixtureBytes("writer/\(manifest.references[dtype.rawValue]!)")
        #expect([UInt8](try Data(contentsOf: url)) == reference, "\(dtype): streamed file differs from the safetensors package's")
        let sortedNames = sources.map(\.name).sorted { $0.utf8.lexicographicallyPrecedes($1.utf8) }
        var expected: [(String, Range<Int>)] = []
        for name in sortedNames {
            let count = byName[name]!.count
            for start in stride(from: 0, to: count, by: 5) { expected.append((name, start..<min(start + 5, count))) }
        }
        #expect(requests.map(\.0) == expected.map(\.0) && requests.map(\.1) == expected.map(\.1), "chunk requests: \(requests)")
    }

    @Test func streamingWriterFailureLeavesNothing() throws {
        struct GatherFailed: Error {}
        let directory = try TemporaryDirectory()
        defer { directory.cleanup() }
        let url = directory.file("aborted.safetensors")
        #expect(throws: GatherFailed.self) {
            try SafetensorsWriter.write(layout: [("a", [4]), ("b", [1000])], to: url, chunkElements: 100) { name, elements, destination in
                if name == "b", elements.lowerBound >= 500 { throw GatherFailed() }
                destination.initialize(repeating: 1)
            }
        }
        #expect(directory.contents().isEmpty, "an aborted write leaves no file: \(directory.contents())")
    }

    @Test func roundTripThroughOurReader() throws {
        let directory = try TemporaryDirectory()
        defer { directory.cleanup() }
        let url = directory.file("round-trip.safetensors")
        let metadata = ["format": "pt", "note": "quote \" backslash \\ newline \n tab \t ✓"]
        try withTensors { try SafetensorsWriter.write($0, metadata: metadata, to: url) }
        let file = try SafetensorsFile(url: url)
        #expect(file.metadata == metadata)
        #expect(file.tensorNames == sources.map(\.name).sorted { $0.utf8.lexicographicallyPrecedes($1.utf8) })
        for source in sources {
            #expect(file.tensors[source.name] == TensorInfo(name: source.name, shape: source.shape, dtype: .f32))
            expectBitwiseEqual(try file.read(source.name), source.values, "round trip \(source.name)")
        }
        // BF16 round trip equals what the safetensors package stored for the same values.
        let bf16 = directory.file("round-trip-bf16.safetensors")
        try withTensors { try SafetensorsWriter.write($0, dtype: .bf16, to: bf16) }
        let reference = try SafetensorsFile(url: Fixtures.url("writer/reference_bf16.safetensors"))
        let ours = try SafetensorsFile(url: bf16)
        #expect(ours.metadata.isEmpty)
        for source in sources {
            expectBitwiseEqual(try ours.read(source.name), try reference.read(source.name), "bf16 \(source.name)")
        }
    }

    @Test func emptyAndScalarTensors() throws {
        let directory = try TemporaryDirectory()
        defer { directory.cleanup() }
        let url = directory.file("edge.safetensors")
        let scalar: [Float] = [42]
        try scalar.withUnsafeBufferPointer { one in
            try SafetensorsWriter.write([("scalar", [], one), ("empty", [0, 4], UnsafeBufferPointer(start: nil, count: 0))], to: url)
        }
        let file = try SafetensorsFile(url: url)
        #expect(file.tensors["scalar"]?.shape == [])
        #expect(try file.read("scalar") == [42])
        #expect(file.tensors["empty"]?.shape == [0, 4])
        #expect(try file.read("empty") == [])
        let nothing = directory.file("nothing.safetensors")
        try SafetensorsWriter.write([], to: nothing)
        #expect([UInt8](try Data(contentsOf: nothing)) == [8, 0, 0, 0, 0, 0, 0, 0] + Array("{}      ".utf8), "as save_file({}) writes")
    }

    @Test func refusesToOverwriteUnlessAsked() throws {
        let directory = try TemporaryDirectory()
        defer { directory.cleanup() }
        let url = directory.file("existing.safetensors")
        try Data("precious".utf8).write(to: url)
        expectCheckpointError(.fileExists, path: url.path, mentions: ["overwrite: true"]) {
            try withTensors { try SafetensorsWriter.write($0, to: url) }
        }
        #expect(try Data(contentsOf: url) == Data("precious".utf8), "the existing file is untouched")
        try withTensors { try SafetensorsWriter.write($0, to: url, overwrite: true) }
        #expect(try SafetensorsFile(url: url).tensors.count == sources.count)
        #expect(directory.contents() == ["existing.safetensors"], "no temporary files left behind")
    }

    @Test func invalidInputLeavesNoFile() throws {
        let directory = try TemporaryDirectory()
        defer { directory.cleanup() }
        let url = directory.file("never.safetensors")
        let values: [Float] = [1, 2, 3]
        values.withUnsafeBufferPointer { data in
            expectCheckpointError(.inconsistentTensor, path: url.path, tensor: "w", mentions: ["4 floats for shape [2, 2]", "found 3"]) {
                try SafetensorsWriter.write([("w", [2, 2], data)], to: url)
            }
            expectCheckpointError(.duplicateTensor, path: url.path, tensor: "w") {
                try SafetensorsWriter.write([("w", [3], data), ("w", [3], data)], to: url)
            }
            expectCheckpointError(.malformedHeader, path: url.path, tensor: "__metadata__") {
                try SafetensorsWriter.write([("__metadata__", [3], data)], to: url)
            }
            expectCheckpointError(.unsupportedDType, path: url.path, mentions: ["q8_0"]) {
                try SafetensorsWriter.write([("w", [3], data)], dtype: .q8_0, to: url)
            }
            let missing = directory.file("no-such-directory/file.safetensors")
            expectCheckpointError(.writeFailed, path: missing.path, mentions: ["No such file or directory"]) {
                try SafetensorsWriter.write([("w", [3], data)], to: missing)
            }
        }
        #expect(directory.contents().isEmpty, "nothing written: \(directory.contents())")
    }

    /// Leaves a BF16 file for `tools/generate_checkpoint_fixtures.py` to load with the safetensors package
    /// (its writer check); the file must also read back here.
    @Test func writesTheFileForThePythonCheck() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("zero-sft-checkpoints")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        let url = directory.appendingPathComponent("writer-check.safetensors")
        try withTensors {
            try SafetensorsWriter.write($0, dtype: .bf16, metadata: ["origin": "zero-sft SafetensorsWriter", "dtype": "bf16"],
                                        to: url, overwrite: true)
        }
        let file = try SafetensorsFile(url: url)
        #expect(file.tensors.values.allSatisfy { $0.dtype == .bf16 })
        #expect(file.metadata["origin"] == "zero-sft SafetensorsWriter")
    }
}

/// Half and bfloat16 conversions against Swift's own Float16 and exhaustive bit patterns.
@Suite struct HalfPrecisionTests {
    @Test func halfToFloatIsExactForAllBitPatterns() {
        var mismatches: [UInt16] = []
        for bits in 0...UInt16.max {
            let ours = floatFromHalfBits(bits)
            let reference = Float(Float16(bitPattern: bits))
            let same = ours.isNaN ? reference.isNaN : ours.bitPattern == reference.bitPattern
            if !same { mismatches.append(bits) }
        }
        #expect(mismatches.isEmpty, "\(mismatches.count) half bit patterns convert differently, first: \(mismatches.prefix(5))")
    }

    @Test func bfloat16RoundsToNearestEven() {
        #expect(bfloat16Bits(from: 1.0) == 0x3F80)
        #expect(bfloat16Bits(from: Float(bitPattern: 0x3F80_8000)) == 0x3F80, "halfway, even stays")
        #expect(bfloat16Bits(from: Float(bitPattern: 0x3F81_8000)) == 0x3F82, "halfway, odd rounds up")
        #expect(bfloat16Bits(from: Float(bitPattern: 0x3F80_8001)) == 0x3F81)
        #expect(bfloat16Bits(from: .infinity) == 0x7F80)
        #expect(bfloat16Bits(from: Float(bitPattern: 0x7F7F_FFFF)) == 0x7F80, "max float rounds to infinity")
        #expect(floatFromBFloat16Bits(bfloat16Bits(from: .nan)).isNaN)
        #expect(floatFromBFloat16Bits(bfloat16Bits(from: -2.5)) == -2.5)
    }
}
