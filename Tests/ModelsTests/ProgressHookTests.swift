import Testing
@testable import Models
import Kernels

/// The progress hook (`UnitStore.progressInFlight()`): the model calls it between its matrix
/// products, during the forward, the head and the backward, and it changes no value.
@Suite struct ProgressHookTests {
    /// A dense store that counts the hook's calls, and in which phase of the pass they came.
    final class CountingStore: UnitStore {
        let inner: DenseUnitStore
        var calls = 0
        /// Calls made while a unit's gradient scope was open (the head's and the layers' backward).
        var callsInBackward = 0
        var gradientScopes = 0

        init(_ inner: DenseUnitStore) { self.inner = inner }

        func beginPass(schedule: [Int]) throws { try inner.beginPass(schedule: schedule) }
        func endPass() throws { try inner.endPass() }
        func withParameters<R>(of unit: Int, _ body: (UnsafeBufferPointer<Float>) throws -> R) throws -> R {
            try inner.withParameters(of: unit, body)
        }
        func withGradients<R>(of unit: Int, _ body: (UnsafeMutableBufferPointer<Float>) throws -> R) throws -> R {
            gradientScopes += 1
            defer { gradientScopes -= 1 }
            return try inner.withGradients(of: unit, body)
        }
        func progressInFlight() {
            calls += 1
            if gradientScopes > 0 { callsInBackward += 1 }
        }
    }

    static let config = ModelConfig(vocabSize: 40, hiddenSize: 16, intermediateSize: 24, numHiddenLayers: 3,
                                    numAttentionHeads: 4, numKeyValueHeads: 2, initializerRange: 0.3)
    static let batch = TokenBatch(examples: [
        (inputIDs: [1, 5, 9, 12, 3, 7, 30, 2, 8], labels: [-100, -100, -100, 12, 3, 7, 30, 2, -100]),
    ])

    @Test func calledBetweenProductsWithoutChangingAnyValue() throws {
        let batch = Self.batch
        let plain = DenseUnitStore(config: Self.config, seed: 7)
        let counted = CountingStore(DenseUnitStore(config: Self.config, seed: 7))
        let model = DecoderModel(config: Self.config, maxTokens: batch.count)
        let scale = 1 / Float(batch.supervisedCount)
        let expected = try model.step(batch, store: plain, lossScale: scale, training: true)
        let found = try model.step(batch, store: counted, lossScale: scale, training: true)
        #expect(found.lossSum == expected.lossSum, "loss \(found.lossSum) with the hook counted, \(expected.lossSum) without")
        for (index, gradient) in plain.gradients.enumerated() {
            let other = counted.inner.gradients[index]
            let differing = (0..<gradient.count).first { gradient.pointer[$0].bitPattern != other.pointer[$0].bitPattern }
            #expect(differing == nil, "unit \(index): gradient element \(differing ?? -1) differs")
        }
        // Each layer's forward has 8 products (q, k, v, attention, o, gate, up, down) and a call after
        // each, its backward 9; the head a call after its first two products and after each group of
        // softmax rows (``Classifier/rowsPerProgress`` at a time). A layer that fuses products has fewer:
        // at least 4 per layer and direction are required.
        let layers = Self.config.numHiddenLayers
        let rows = (batch.supervisedCount + Classifier.rowsPerProgress - 1) / Classifier.rowsPerProgress
        let forward = counted.calls - counted.callsInBackward
        #expect(forward >= layers * 4, "\(forward) calls of the hook in the forward of \(layers) layers")
        #expect(counted.callsInBackward >= layers * 4 + rows + 2, "\(counted.callsInBackward) calls in the head and the backward")
        // The evaluation path calls it too: every layer and the head (no backward product there).
        let before = counted.calls
        _ = try model.step(batch, store: counted, lossScale: scale, training: false)
        #expect(counted.calls - before >= layers * 4 + rows + 1, "\(counted.calls - before) calls in an evaluation pass")
    }
}
