import Collectives
import Kernels
import Models

/// Collectives that move only when their rank polls them (the gradient reducer's rings): whoever
/// waits in MPI on something else must keep them moving, or the ranks waiting on them could stall.
public protocol BackgroundWork: AnyObject {
    /// Nothing in flight.
    var isIdle: Bool { get }
    /// Advances everything in flight as far as its messages allow.
    func progress() throws
}

/// The parameters of one rank — store, gather, prefetch, release — and nothing else: what
/// evaluation and generation use on their own, with no gradient or optimizer memory.
///
/// One flat buffer (``RoleBuffer``) holds them: stages 0–2 every unit whole (padded to a multiple of
/// the rank count), stage 3 this rank's shard of each unit. At stage 3 ``withParameters(of:_:)``
/// all-gathers the unit into a fresh full-size buffer (or waits for the all-gather started as the
/// previous unit's prefetch), starts the non-blocking all-gather of the next unit of the pass's
/// schedule, runs the closure, and frees the unit when it returns: the gathered unit is reachable
/// only inside the closure. Gathers follow ``DecoderModel/parameterSchedule(training:)``, the same
/// order on every rank.
///
/// Under ``ParameterDType/bf16`` (`--param-dtype bf16`) the closure sees every parameter rounded to
/// bf16: at stage 3 each rank rounds its shard into the bf16 all-gather's buffer (half the bytes on
/// the wire) and the unit is widened to fp32 when it is used; at stages 0–2 a rounded copy of the unit
/// is made for the closure. The store itself (the fp32 masters) is never rounded.
///
/// A released buffer of a layer's size is kept as a spare for the next one (``SpareBuffers``): the
/// layers' gathers reuse one or two buffers instead of mapping (and the kernel zeroing) fresh memory
/// for each; the spare is counted as gathered parameters while kept.
public final class ShardedParameters: UnitStore {
    public let stage: ZeroStage
    public let plan: ShardPlan
    public let layout: ParameterLayout
    public let communicator: Communicator
    let rank: Int
    /// Stages 0–2: every padded unit; stage 3: this rank's shards.
    public let store: RoleBuffer
    /// Polled while this rank waits for a gather (set by the trainer's engine to its gradient reducer).
    public weak var background: BackgroundWork?
    /// Stage 3: how many units of the schedule are gathered ahead of the one in use (each holds one
    /// full unit more in memory while in flight).
    public let prefetchDepth: Int
    /// One unit ahead: the next unit's gather runs during this unit's compute.
    public static let defaultPrefetchDepth = 1
    /// The dtype the model reads parameters in (and stage 3 all-gathers them in).
    public let parameterDType: ParameterDType

    /// Stage 3: units gathered for use, and all-gathers in flight (prefetches).
    var gathered: [Int: FloatBuffer] = [:]
    var gathering: [Int: CollectiveRequest] = [:]
    /// `--param-dtype bf16`, stage 3: each gather's buffer of bf16 patterns (two per `Float` slot), from
    /// its start until the unit is widened into ``gathered``.
    var wires: [Int: FloatBuffer] = [:]
    /// Released layer-size buffers kept for the next gather, widening or rounded copy (``SpareBuffers``).
    var spares: SpareBuffers
    var schedule: [Int] = []
    var cursor = 0

    /// Byte counters for the memory ledger.
    public private(set) var gatheredBytes = 0, peakGatheredBytes = 0

    /// Allocates this rank's parameters and fills them with `initialize(unit, elements, destination)`,
    /// called only for the ranges this rank keeps (elements past the unit's count are padding: zero).
    public init(
        layout: ParameterLayout, stage: ZeroStage, communicator: Communicator,
        prefetchDepth: Int = ShardedParameters.defaultPrefetchDepth, parameterDType: ParameterDType = .fp32,
        initialize: (_ unit: Int, _ elements: Range<Int>, _ destination: UnsafeMutableBufferPointer<Float>) throws -> Void
    ) throws {
        precondition(prefetchDepth >= 1, "ShardedParameters: prefetchDepth must be at least 1, got \(prefetchDepth)")
        self.layout = layout
        self.stage = stage
        self.communicator = communicator
        self.prefetchDepth = prefetchDepth
        self.parameterDType = parameterDType
        rank = communicator.rank
        plan = ShardPlan(layout: layout, ranks: communicator.size)
        store = RoleBuffer(layout: plan.flatLayout(sharded: stage.shardsParameters, rank: rank))
        spares = SpareBuffers(counts: plan.recurringCounts(\.paddedCount).union(
            parameterDType == .bf16 ? plan.recurringCounts { ($0.paddedCount + 1) / 2 } : []))
        for (index, unit) in plan.units.enumerated() {
            let held = store.layout.entries[index].elements
            let valid = held.clamped(to: 0..<unit.count)
            if !valid.isEmpty { try initialize(index, valid, store.elements(valid, of: index)) }
        }
    }

    /// Collectives still in flight when the store goes away (an error unwound a pass): they and their
    /// buffers are kept alive, never waited for. Waiting could hang this rank in a collective the others
    /// will not join, before `Job.run` gets to abort the job; freeing the buffers could let MPI write
    /// into freed memory.
    nonisolated(unsafe) static var abandoned: [AnyObject] = []

    deinit {
        guard !gathering.isEmpty else { return }
        Self.abandoned += gathering.values.map { $0 as AnyObject } + Array(gathered.values) + Array(wires.values)
    }

    public var parameterBytes: Int { store.bytes }

    // MARK: One pass

    public func beginPass(schedule: [Int]) throws {
        precondition(gathered.isEmpty && gathering.isEmpty, "ShardedParameters: previous pass not finished")
        self.schedule = schedule
        cursor = 0
    }

    public func endPass() throws {
        precondition(cursor == schedule.count, "ShardedParameters: pass used \(cursor) of \(schedule.count) scheduled units")
        precondition(gathered.isEmpty && gathering.isEmpty, "ShardedParameters: units still held at the end of the pass")
        gatheredBytes -= spares.removeAll()
    }

    public func withParameters<R>(of unit: Int, _ body: (UnsafeBufferPointer<Float>) throws -> R) throws -> R {
        precondition(cursor < schedule.count && schedule[cursor] == unit,
                     "ShardedParameters: unit \(unit) requested out of schedule (expected \(cursor < schedule.count ? String(schedule[cursor]) : "none"))")
        cursor += 1
        try background?.progress()
        guard stage.shardsParameters else {
            guard parameterDType == .bf16 else { return try body(UnsafeBufferPointer(store.unit(unit))) }
            let rounded = allocate(store.unit(unit).count)
            BFloat16.roundKeepingFloat(UnsafeBufferPointer(store.unit(unit)), into: rounded.pointer)
            defer { release(rounded) }
            return try body(UnsafeBufferPointer(rounded.pointer))
        }
        if let request = gathering.removeValue(forKey: unit) { try wait(for: request, unit: unit) }
        if gathered[unit] == nil, wires[unit] == nil { try wait(for: startGather(unit), unit: unit) }
        if let wire = wires.removeValue(forKey: unit) { widen(wire, unit: unit) }
        // Prefetch the next units while this one computes (the same order on every rank).
        for next in schedule[cursor..<min(cursor + prefetchDepth, schedule.count)] where gathered[next] == nil && wires[next] == nil {
            gathering[next] = try startGather(next)
        }
        guard let buffer = gathered[unit] else { preconditionFailure("ShardedParameters: unit \(unit) not gathered") }
        defer {
            precondition(gathering[unit] == nil, "ShardedParameters: released unit \(unit) with its gather in flight")
            gathered[unit] = nil
            release(buffer)
        }
        return try body(UnsafeBufferPointer(buffer.pointer))
    }

    /// No gather in flight.
    public var isIdle: Bool { gathering.isEmpty }

    /// Tests every gather in flight (``CollectiveRequest/test()``): a progress pass of Open MPI for
    /// each, which moves libnbc's all-gather schedules and the TCP transport's messages.
    public func progress() throws {
        for request in gathering.values { _ = try request.test() }
    }

    /// Parameters have no gradients: a store for evaluation and generation only.
    public func withGradients<R>(of unit: Int, _ body: (UnsafeMutableBufferPointer<Float>) throws -> R) throws -> R {
        preconditionFailure("ShardedParameters: no gradients (an inference store; training uses ZeroEngine)")
    }

    /// Starts the all-gather of `unit` into a buffer of its own (``allocate(_:)``): fp32 into ``gathered``; bf16 into ``wires``,
    /// after rounding this rank's shard into its own slice of the buffer (`MPI_IN_PLACE`).
    private func startGather(_ unit: Int) throws -> CollectiveRequest {
        let padded = plan.units[unit].paddedCount
        let shard = UnsafeBufferPointer(store.unit(unit))
        switch parameterDType {
        case .fp32:
            let buffer = allocate(padded)
            gathered[unit] = buffer
            return try communicator.startAllGather(shard, into: buffer.pointer)
        case .bf16:
            let wire = allocate((padded + 1) / 2)
            wires[unit] = wire
            return try wire.withUInt16s { patterns in
                let all = UnsafeMutableBufferPointer(rebasing: patterns[0..<padded])
                let slot = UnsafeMutableBufferPointer(rebasing: all[(rank * shard.count)..<((rank + 1) * shard.count)])
                BFloat16.round(shard, into: slot)
                return try communicator.startAllGather(UnsafeBufferPointer(slot), into: all)
            }
        }
    }

    /// Widens a completed bf16 gather of `unit` into its fp32 buffer in ``gathered`` and frees the
    /// patterns (both are held for the moment of the copy).
    private func widen(_ wire: FloatBuffer, unit: Int) {
        let padded = plan.units[unit].paddedCount
        let buffer = allocate(padded)
        wire.withUInt16s { BFloat16.widen(UnsafeBufferPointer(rebasing: $0[0..<padded]), into: buffer.pointer) }
        gathered[unit] = buffer
        release(wire)
    }

    /// A buffer of `count` floats for a gather, a widening or a rounded copy, every element of which
    /// the caller overwrites: the spare of that size (``SpareBuffers``) or a new one, counted in the
    /// ledger's `gathered_parameters` (``gatheredBytes`` and its peak) when new.
    private func allocate(_ count: Int) -> FloatBuffer {
        let (buffer, _, change) = spares.take(count: count)
        gatheredBytes += change
        peakGatheredBytes = max(peakGatheredBytes, gatheredBytes)
        return buffer
    }

    /// A buffer the pass is done with: kept as the spare of its size (and still counted) when a unit
    /// still to come in the pass will need a new buffer of that size, else freed.
    private func release(_ buffer: FloatBuffer) {
        let count = buffer.count
        let wanted = schedule[cursor...].contains { unit in
            let padded = plan.units[unit].paddedCount
            return gathered[unit] == nil && (padded == count || (wires[unit] == nil && parameterDType == .bf16 && (padded + 1) / 2 == count))
        }
        gatheredBytes -= spares.give(buffer, keep: wanted)
    }

    /// Waits for the all-gather of `unit`, advancing the gradient reducer's rings meanwhile (a ring
    /// moves only when its rank tests it), through the communicator's `poll`: backoff, and the
    /// `--collective-timeout` watchdog naming the unit.
    private func wait(for request: CollectiveRequest, unit: Int) throws {
        try communicator.poll("all-gather of unit \(unit) (\(plan.units[unit].name))") {
            try background?.progress()
            return try request.test()
        }
    }

    // MARK: After the optimizer step

    /// Stages 1–2: every rank updated its own shard of the full units; all-gathers them in place.
    public func allGatherUpdatedShards() throws {
        guard stage == .one || stage == .two else { return }
        for (index, unit) in plan.units.enumerated() {
            let full = store.unit(index)
            try communicator.allGather(UnsafeBufferPointer(full.view(unit.range(rank: rank))), into: full)
        }
    }

    // MARK: Whole-model access (checkpoints, checksums, tests)

    /// The full parameters of `unit` (unpadded), gathered from every rank's shard at stage 3.
    /// Every rank must call it (a collective at stage 3).
    public func fullParameters(unit: Int) throws -> [Float] {
        let count = layout.units[unit].count
        guard stage.shardsParameters else { return Array(store.unit(unit).prefix(count)) }
        let buffer = FloatBuffer(count: plan.units[unit].paddedCount)
        try communicator.allGather(UnsafeBufferPointer(store.unit(unit)), into: buffer.pointer)
        return Array(buffer.pointer.prefix(count))
    }

    /// A checksum of every parameter this rank owns, summed over ranks in Double: identical on all ranks.
    public func checksum() throws -> Double {
        var local = 0.0
        for (index, unit) in plan.units.enumerated() {
            let range = unit.range(rank: rank)
            let values = store.elements(range, of: index)
            var partial = 0.0
            for (i, x) in values.enumerated() { partial += Double(x) * (1 + Double((range.lowerBound + i) % 7) * 0.125) }
            local += partial
        }
        return try communicator.allReduce(local, .sum)
    }
}
