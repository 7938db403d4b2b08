import Kernels

/// Every unit's parameters and gradients held whole in this process: the store for single-process
/// evaluation, generation and tests. (The ZeRO engine is the sharded store.)
public final class DenseUnitStore: UnitStore {
    public let layout: ParameterLayout
    public let parameters: [FloatBuffer]
    public let gradients: [FloatBuffer]

    /// Zero-filled parameters and gradients for `layout`.
    public init(layout: ParameterLayout, withGradients: Bool = true) {
        self.layout = layout
        parameters = layout.units.map { FloatBuffer(count: $0.count) }
        gradients = withGradients ? layout.units.map { FloatBuffer(count: $0.count) } : []
    }

    /// Randomly initialised parameters (``ParameterInitialization``).
    public convenience init(config: ModelConfig, seed: UInt64, withGradients: Bool = true) {
        let layout = ParameterLayout(config: config)
        self.init(layout: layout, withGradients: withGradients)
        for (index, unit) in layout.units.enumerated() {
            ParameterInitialization.fill(parameters[index].pointer, unit: index, elements: 0..<unit.count,
                                         layout: layout, config: config, seed: seed)
        }
    }

    /// The tensor's elements, mutable, e.g. to load a checkpoint or perturb one weight.
    public func tensor(_ name: String) -> UnsafeMutableBufferPointer<Float>? {
        for (index, unit) in layout.units.enumerated() {
            if let tensor = unit.tensor(named: name) { return parameters[index].slice(tensor.range) }
        }
        return nil
    }

    public func gradient(_ name: String) -> UnsafeMutableBufferPointer<Float>? {
        for (index, unit) in layout.units.enumerated() {
            if let tensor = unit.tensor(named: name) { return gradients[index].slice(tensor.range) }
        }
        return nil
    }

    public func zeroGradients() { gradients.forEach { $0.zero() } }

    public func beginPass(schedule: [Int]) throws {}
    public func endPass() throws {}

    public func withParameters<R>(of unit: Int, _ body: (UnsafeBufferPointer<Float>) throws -> R) throws -> R {
        try body(UnsafeBufferPointer(parameters[unit].pointer))
    }

    public func withGradients<R>(of unit: Int, _ body: (UnsafeMutableBufferPointer<Float>) throws -> R) throws -> R {
        precondition(!gradients.isEmpty, "DenseUnitStore: created without gradients")
        return try body(gradients[unit].pointer)
    }
}
