import Collectives
import Kernels
import Models

/// The training state of one rank, stage 0 to 3: the three parts of ZeRO composed.
///
/// - ``ShardedParameters``: the parameters (one flat buffer), their stage-3 gathers and prefetch;
///   what evaluation and generation use alone.
/// - ``GradientReducer``: the gradients (one flat buffer), the rings that reduce-scatter them during
///   the backward under a cap on reductions in flight, the reduction after the last micro-batch and
///   the global norm.
/// - ``ShardedAdamW``: the moments (one flat buffer each) and the step over owned elements.
///
/// Each role's buffer is laid out by one offsets table from ``ShardPlan`` (``FlatLayout``), in unit
/// order, so a rank's shard of a role is one contiguous range. The model reaches parameters and
/// gradients through ``UnitStore``'s scopes; this class only routes them and polls the reducer's
/// rings while a gather waits.
public final class ZeroEngine: UnitStore {
    public let stage: ZeroStage
    public let plan: ShardPlan
    public let layout: ParameterLayout
    public let communicator: Communicator
    public let parameters: ShardedParameters
    public let gradients: GradientReducer
    public let adamW: ShardedAdamW

    /// Allocates this rank's state and fills its parameters with `initialize(unit, elements, destination)`,
    /// called only for the ranges this rank keeps (elements past the unit's count are padding: zero).
    public init(
        layout: ParameterLayout, stage: ZeroStage, communicator: Communicator, optimizer: AdamW,
        reductionsInFlight: Int = ZeroEngine.defaultReductionsInFlight,
        prefetchDepth: Int = ShardedParameters.defaultPrefetchDepth, parameterDType: ParameterDType = .fp32,
        initialize: (_ unit: Int, _ elements: Range<Int>, _ destination: UnsafeMutableBufferPointer<Float>) throws -> Void
    ) throws {
        precondition(reductionsInFlight >= 1, "ZeroEngine: reductionsInFlight must be at least 1, got \(reductionsInFlight)")
        self.layout = layout
        self.stage = stage
        self.communicator = communicator
        parameters = try ShardedParameters(layout: layout, stage: stage, communicator: communicator,
                                           prefetchDepth: prefetchDepth, parameterDType: parameterDType, initialize: initialize)
        plan = parameters.plan
        gradients = GradientReducer(plan: plan, stage: stage, communicator: communicator, reductionsInFlight: reductionsInFlight)
        adamW = ShardedAdamW(optimizer: optimizer, layout: layout, plan: plan, stage: stage, rank: communicator.rank,
                             parameters: parameters.store.layout, gradients: gradients.store.layout)
        parameters.background = gradients
    }

    /// The default cap on reduce-scatters in flight: one layer's gradient travelling while the next
    /// is computed, and one more so that a rank slightly ahead does not wait at every unit.
    public static let defaultReductionsInFlight = 2

    public var reductionsInFlight: Int { gradients.reductionsInFlight }
    /// Stage 3: how many units of the schedule are gathered ahead of the one in use.
    public var prefetchDepth: Int { parameters.prefetchDepth }
    /// The dtype the model reads parameters in (`--param-dtype`).
    public var parameterDType: ParameterDType { parameters.parameterDType }

    // MARK: Bytes held (the memory ledger)

    public var parameterBytes: Int { parameters.parameterBytes }
    public var gradientBytes: Int { gradients.gradientBytes }
    public var momentBytes: Int { adamW.momentBytes }
    public var peakGatheredBytes: Int { parameters.peakGatheredBytes }
    public var peakGradientBufferBytes: Int { gradients.peakGradientBufferBytes }
    public var peakCommunicationBytes: Int { gradients.peakCommunicationBytes }

    // MARK: One micro-step (UnitStore)

    public func beginPass(schedule: [Int]) throws { try parameters.beginPass(schedule: schedule) }

    /// Completes the micro-step's outstanding reduce-scatters.
    public func endPass() throws {
        try throwProgressError()
        try parameters.endPass()
        try gradients.finish()
    }

    public func withParameters<R>(of unit: Int, _ body: (UnsafeBufferPointer<Float>) throws -> R) throws -> R {
        try throwProgressError()
        return try parameters.withParameters(of: unit, body)
    }

    public func withGradients<R>(of unit: Int, _ body: (UnsafeMutableBufferPointer<Float>) throws -> R) throws -> R {
        try throwProgressError()
        return try gradients.withGradients(of: unit, body)
    }

    // MARK: Communication during compute

    /// The progress hook the model calls between its matrix products: at most every
    /// ``Communicator/progressInterval`` (``Communicator/progressIfDue(_:)``), tests the stage-3
    /// prefetches in flight and advances the gradient rings, folding completed ones into the shard
    /// oldest first, exactly as a wait would. Nothing in flight: returns at once. An MPI error is
    /// kept and thrown by the next scope (``withParameters(of:_:)``, ``withGradients(of:_:)``,
    /// ``endPass()``).
    public func progressInFlight() {
        guard progressError == nil, !(parameters.isIdle && gradients.isIdle) else { return }
        do {
            try communicator.progressIfDue {
                try parameters.progress()
                try gradients.progress()
            }
        } catch {
            progressError = error
        }
    }

    /// An error of ``progressInFlight()``, thrown from the next scope.
    private var progressError: (any Error)? = nil

    private func throwProgressError() throws {
        guard let error = progressError else { return }
        progressError = nil
        throw error
    }

    // MARK: The optimizer step

    /// After the last micro-batch: each rank's summed gradient and the global L2 norm (``GradientReducer/reduce()``).
    public func reduceGradients() throws -> Double { try gradients.reduce() }

    /// AdamW on this rank's elements, then (stages 1–2) the all-gather of the updated shards; gradients are zeroed.
    public func optimizerStep(learningRate: Float, gradientScale: Float) throws {
        adamW.step(parameters: parameters.store, gradients: gradients.store, learningRate: learningRate, gradientScale: gradientScale)
        try parameters.allGatherUpdatedShards()
        gradients.zero()
    }

    // MARK: Whole-model access (checkpoints, checksums, tests)

    /// The full parameters of `unit` (unpadded); a collective at stage 3.
    public func fullParameters(unit: Int) throws -> [Float] { try parameters.fullParameters(unit: unit) }

    /// A checksum of every parameter, identical on all ranks (a collective).
    public func parameterChecksum() throws -> Double { try parameters.checksum() }
}
