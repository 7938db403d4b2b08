import Foundation
import Testing
@testable import Checkpoints

/// The real SmolLM2-135M-Instruct Q4_1 GGUF, against goldens computed with the `gguf` package
/// (GGUFReader + gguf.quants.dequantize) by tools/generate_checkpoint_fixtures.py.
@Suite struct SmolLM2GGUFTests {
    struct Goldens: Decodable {
        struct Tensor: Decodable {
            var dtype: String
            var element_count: Int
            var sum: Double
            var checksum: String
            var values: [String: Float]
            var slice_start: Int
            var slice: [Float]
        }
        var version: Int
        var tensor_count: Int
        var metadata_count: Int
        var architecture: String
        var block_count: Int
        var token_count: Int
        var token_1000: String
        var rms_epsilon: Float
        var dtype_counts: [String: Int]
        var shapes: [String: [Int]]
        var tensors: [String: Tensor]
    }

    static let modelPath = Fixtures.packageRoot.appendingPathComponent("models/SmolLM2-135M-Instruct.Q4_1.gguf")

    /// Opens the model, or records a failure telling the user how to fetch it (never a silent skip).
    static func openModel(sourceLocation: SourceLocation = #_sourceLocation) throws -> GGUFFile? {
        guard FileManager.default.fileExists(atPath: modelPath.path) else {
            Issue.record("""
                \(modelPath.path) is missing: run `launch/fetch-smollm2` from the repository root \
                (it downloads and verifies the SmolLM2-135M-Instruct Q4_1 GGUF, ~100 MB)
                """, sourceLocation: sourceLocation)
            return nil
        }
        return try GGUFFile(url: modelPath)
    }

    /// sum over i of bits(value[i]) · (2i + 1), mod 2^64: the generator's exact checksum.
    static func checksum(_ values: [Float]) -> UInt64 {
        values.withUnsafeBufferPointer { buffer in
            var sum: UInt64 = 0
            for i in 0..<buffer.count { sum &+= UInt64(buffer[i].bitPattern) &* UInt64(2 * i + 1) }
            return sum
        }
    }

    @Test func headerMetadataAndShapes() throws {
        guard let model = try Self.openModel() else { return }
        let goldens = try Fixtures.json(Goldens.self, "smollm2/goldens.json")
        #expect(model.version == goldens.version)
        #expect(model.tensors.count == goldens.tensor_count)
        #expect(model.tensorNames.count == goldens.tensor_count)
        #expect(model.metadata.count == goldens.metadata_count)
        #expect(model.architecture == "llama")
        #expect(model.architecture == goldens.architecture)
        #expect(model.metadata["llama.block_count"]?.int == 30)
        #expect(model.metadata["llama.block_count"]?.int == goldens.block_count)
        #expect(model.metadata["llama.attention.layer_norm_rms_epsilon"]?.float == goldens.rms_epsilon)
        let tokens = try #require(model.metadata["tokenizer.ggml.tokens"]?.stringArray)
        #expect(tokens.count == goldens.token_count)
        #expect(tokens[1000] == goldens.token_1000)
        #expect(model.metadata["tokenizer.ggml.token_type"]?.intArray?.count == goldens.token_count)
        #expect(model.tensors["token_embd.weight"]?.shape == [49152, 576])
        #expect(model.tensors["blk.0.attn_k.weight"]?.shape == [192, 576])
        for (name, shape) in goldens.shapes {
            #expect(model.tensors[name]?.shape == shape, "\(name) shape (HF order)")
        }
        var counts: [String: Int] = [:]
        for info in model.tensors.values { counts[info.dtype.rawValue, default: 0] += 1 }
        #expect(counts == goldens.dtype_counts)
    }

    @Test func dequantisedTensorsMatchTheGGUFPackage() throws {
        guard let model = try Self.openModel() else { return }
        let goldens = try Fixtures.json(Goldens.self, "smollm2/goldens.json")
        for (name, golden) in goldens.tensors.sorted(by: { $0.key < $1.key }) {
            let info = try model.info(name)
            #expect(info.dtype.rawValue == golden.dtype, "\(name) dtype")
            #expect(info.elementCount == golden.element_count, "\(name) element count")
            let values = try model.read(name)
            #expect(Self.checksum(values) == UInt64(golden.checksum), "\(name): checksum of every element's bits differs from the gguf package's")
            let sum = values.reduce(0.0) { $0 + Double($1) }
            #expect(abs(sum - golden.sum) <= 1e-9 * max(1, abs(golden.sum)), "\(name): sum \(sum) vs \(golden.sum)")
            for (index, expected) in golden.values {
                let i = try #require(Int(index))
                #expect(values[i].bitPattern == expected.bitPattern, "\(name)[\(i)] = \(values[i]), expected \(expected)")
            }
            let range = golden.slice_start..<(golden.slice_start + golden.slice.count)
            expectBitwiseEqual(try model.read(name, elements: range), golden.slice, "\(name) ranged read \(range)")
        }
    }

    /// Dequantises every tensor of the model and reports the time (the figure quoted in the docs).
    @Test func dequantiseWholeModel() throws {
        guard try Self.openModel() != nil else { return }
        let clock = ContinuousClock()
        var opened: GGUFFile?
        let openTime = try clock.measure { opened = try GGUFFile(url: Self.modelPath) }
        let model = try #require(opened)
        let total = model.tensors.values.reduce(0) { $0 + $1.elementCount }
        var buffer = [Float](repeating: 0, count: model.tensors.values.map(\.elementCount).max() ?? 0)
        let elapsed = try clock.measure {
            try buffer.withUnsafeMutableBufferPointer { destination in
                for name in model.tensorNames {
                    let count = model.tensors[name]!.elementCount
                    try model.read(name, elements: 0..<count, into: UnsafeMutableBufferPointer(rebasing: destination[0..<count]))
                }
            }
        }
        func seconds(_ duration: Duration) -> Double {
            Double(duration.components.seconds) + Double(duration.components.attoseconds) * 1e-18
        }
        print("SmolLM2-135M Q4_1 GGUF: opened (header, \(model.metadata.count) metadata keys incl. 49152 tokens) in \(String(format: "%.3f", seconds(openTime))) s")
        let seconds = seconds(elapsed)
        print("SmolLM2-135M Q4_1 GGUF: dequantised \(model.tensors.count) tensors, \(total) elements in \(String(format: "%.3f", seconds)) s (\(String(format: "%.2f", seconds * 1e9 / Double(total))) ns/element)")
        #expect(total == 134_515_008)
    }
}
