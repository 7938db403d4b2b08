import Kernels
import Models

/// AdamW over the elements one rank owns: its moments (`m`, `v`: one flat buffer each) and the step.
///
/// Stage 0 keeps moments for every element; stages 1–3 for this rank's shard of each unit, laid out
/// like the stage-3 parameter and stages 2–3 gradient buffers, so at stage 3 (and stage 0) the
/// update is a pass over three buffers in the same layout. The work is a precomputed list of
/// ``Segment``s: contiguous runs that are contiguous in the parameter, gradient and moment buffers
/// alike and share one weight-decay setting (matrices decay; norm weights, biases and padding do
/// not — the weight-decay ranges). With no weight decay every setting is the same, and a stage-3
/// step is one segment: one pass over contiguous memory.
public final class ShardedAdamW {
    /// A run of owned elements, at its offset in each buffer, with its decay setting.
    public struct Segment: Sendable, Equatable {
        public var parameters: Int, gradients: Int, moments: Int, count: Int
        public var decays: Bool
    }

    public var optimizer: AdamW
    public let m: RoleBuffer, v: RoleBuffer
    public let segments: [Segment]
    public private(set) var stepCount = 0

    /// - Parameters: `parameters` and `gradients`: the offsets tables of this rank's parameter and
    ///   gradient buffers (each the shards or every whole unit, by stage).
    public init(optimizer: AdamW, layout: ParameterLayout, plan: ShardPlan, stage: ZeroStage, rank: Int,
                parameters: FlatLayout, gradients: FlatLayout) {
        self.optimizer = optimizer
        let moments = plan.flatLayout(sharded: stage.shardsMoments, rank: rank)
        // Every step reads and writes all of them: their pages are faulted in now, written first.
        m = RoleBuffer(layout: moments, prefault: true)
        v = RoleBuffer(layout: moments, prefault: true)
        let decayMatters = optimizer.weightDecay != 0
        var segments: [Segment] = []
        func append(unit: Int, _ elements: Range<Int>, decays: Bool) {
            guard !elements.isEmpty else { return }
            let p = parameters.range(unit: unit, elements: elements).lowerBound
            let g = gradients.range(unit: unit, elements: elements).lowerBound
            let o = moments.range(unit: unit, elements: elements).lowerBound
            let decays = decayMatters && decays
            if var last = segments.last, last.decays == decays, last.parameters + last.count == p,
               last.gradients + last.count == g, last.moments + last.count == o {
                last.count += elements.count
                segments[segments.count - 1] = last
            } else {
                segments.append(Segment(parameters: p, gradients: g, moments: o, count: elements.count, decays: decays))
            }
        }
        for (index, unit) in plan.units.enumerated() {
            let owned = stage == .zero ? 0..<unit.paddedCount : unit.range(rank: rank)
            for tensor in layout.units[index].tensors { append(unit: index, owned.clamped(to: tensor.range), decays: tensor.decays) }
            // Padding never decays (and stays zero: zero gradient, zero moments, no update).
            append(unit: index, owned.clamped(to: unit.count..<Int.max), decays: false)
        }
        self.segments = segments
    }

    public var momentBytes: Int { m.bytes + v.bytes }

    /// Sets the steps taken (AdamW's bias correction counts them) when training resumes from a checkpoint.
    public func resume(stepCount: Int) {
        precondition(stepCount >= 0, "ShardedAdamW: step count \(stepCount)")
        self.stepCount = stepCount
    }

    /// One AdamW step on every owned element: `parameters` and `gradients` are the buffers whose
    /// tables were given at ``init``; the gradient is read times `gradientScale` (clipping).
    public func step(parameters: RoleBuffer, gradients: RoleBuffer, learningRate: Float, gradientScale: Float) {
        stepCount += 1
        let p = parameters.storage, g = gradients.storage
        for segment in segments {
            optimizer.update(parameters: p.slice(segment.parameters..<(segment.parameters + segment.count)),
                             gradients: UnsafeBufferPointer(g.slice(segment.gradients..<(segment.gradients + segment.count))),
                             m: m.storage.slice(segment.moments..<(segment.moments + segment.count)),
                             v: v.storage.slice(segment.moments..<(segment.moments + segment.count)),
                             step: stepCount, learningRate: learningRate, gradientScale: gradientScale, decay: segment.decays)
        }
    }
}
