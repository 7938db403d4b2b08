import Checkpoints
import Foundation
import ModelIO
import Kernels
import Models
import Testing
import Training

/// Fixtures written by tools/generate_model_fixtures.py (see its docstring).
enum Fixtures {
    static let root: URL = {
        guard let url = Bundle.module.url(forResource: "Fixtures", withExtension: nil) else {
            fatalError("ModelIOTests: the Fixtures resource is missing from the test bundle")
        }
        return url
    }()

    static func url(_ relativePath: String) -> URL { root.appendingPathComponent(relativePath) }

    static func json<T: Decodable>(_ type: T.Type, _ relativePath: String) throws -> T {
        try JSONDecoder().decode(T.self, from: Data(contentsOf: url(relativePath)))
    }

    /// The package root, from this file's path (Tests/ModelIOTests/Support.swift).
    static let packageRoot = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    static let smolLM2 = packageRoot.appendingPathComponent("models/SmolLM2-135M-Instruct.Q4_1.gguf")

    /// The real SmolLM2 GGUF, or a recorded failure telling the user how to fetch it (never a silent skip).
    static func smolLM2Path(sourceLocation: SourceLocation = #_sourceLocation) -> String? {
        guard FileManager.default.fileExists(atPath: smolLM2.path) else {
            Issue.record("""
                \(smolLM2.path) is missing: run `launch/fetch-smollm2` from the repository root \
                (it downloads and verifies the SmolLM2-135M-Instruct Q4_1 GGUF, ~100 MB)
                """, sourceLocation: sourceLocation)
            return nil
        }
        return smolLM2.path
    }

    /// Where the export tests leave directories for the generator script's transformers check.
    static let exportCheck = FileManager.default.temporaryDirectory
        .appendingPathComponent("zero-sft-modelio").appendingPathComponent("export-check")
}

/// goldens.json of a tiny model.
struct TinyGoldens: Decodable {
    var input_ids: [Int]
    var labels: [Int]
    var loss: Double
    var supervised: Int
    var logits: [Float]
    var vocab_size: Int
}

/// A scratch directory removed when the value goes away.
final class ScratchDirectory {
    let url: URL
    init() throws {
        url = FileManager.default.temporaryDirectory.appendingPathComponent("zero-sft-modelio-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
    }
    deinit { try? FileManager.default.removeItem(at: url) }
}

/// The largest |a − b| and where it is.
func maxDifference(_ a: [Float], _ b: [Float]) -> (value: Float, index: Int) {
    precondition(a.count == b.count, "maxDifference: \(a.count) vs \(b.count) elements")
    var worst: Float = 0, index = 0
    for i in a.indices where abs(a[i] - b[i]) > worst || a[i].isNaN != b[i].isNaN {
        worst = a[i].isNaN || b[i].isNaN ? .infinity : abs(a[i] - b[i])
        index = i
    }
    return (worst, index)
}

func maxAbs(_ a: [Float]) -> Float { a.reduce(0) { max($0, abs($1)) } }

/// A model loaded whole, with gradient buffers, from a `--model` string.
func loadDense(_ model: String, withGradients: Bool = true) throws -> (source: ModelSource, store: DenseUnitStore) {
    let source = try ModelSource.open(model)
    let store = DenseUnitStore(layout: ParameterLayout(config: source.config), withGradients: withGradients)
    let fill = ModelExport.initializer(for: source, seed: 0)
    for (index, unit) in store.layout.units.enumerated() { try fill(index, 0..<unit.count, store.parameters[index].pointer) }
    return (source, store)
}

/// Full-sequence logits `(T, V)` of one example.
func fullLogits(_ ids: [Int32], config: ModelConfig, store: UnitStore) throws -> [Float] {
    let model = DecoderModel(config: config, maxTokens: ids.count)
    return try model.logits(TokenBatch(examples: [(ids, [Int32](repeating: -100, count: ids.count))]), store: store)
}
