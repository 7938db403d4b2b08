import Collectives
import Kernels
import Models

/// The gradients of one rank: where the backward accumulates them, the reductions that bring each
/// rank its summed gradient, and the global gradient norm.
///
/// One flat buffer (``RoleBuffer``) persists: stages 0–1 every unit whole (padded), stages 2–3 this
/// rank's shard of each unit. At stages 0–1 ``withGradients(of:_:)`` lends the unit's part of it. At
/// stages 2–3 it lends a fresh full-size buffer and, when the closure returns, starts that unit's
/// reduce-scatter round a ring of ranks (``RingReduceScatter``: in the buffer itself, one shard of
/// scratch), first completing the oldest while ``reductionsInFlight`` are already in flight: each
/// holds a full-size buffer, so the cap is what bounds a rank's gradient memory when ranks drift
/// apart. Completed rings are folded into the shard oldest first, so the two reductions of a tied
/// embedding always add up in the same order. A released layer-size buffer (and scratch shard) is
/// kept for the next layer (``SpareBuffers``) instead of mapping fresh memory for each.
public final class GradientReducer: BackgroundWork {
    public let stage: ZeroStage
    public let plan: ShardPlan
    public let communicator: Communicator
    /// Stages 2–3: the most gradient reduce-scatters in flight at once.
    public let reductionsInFlight: Int
    let rank: Int
    /// Stages 0–1: every padded unit; stages 2–3: this rank's shards.
    public let store: RoleBuffer

    /// Oldest first; each ring reduces in `full` and receives into `scratch` (one shard).
    var reductions: [(unit: Int, ring: RingReduceScatter<Float>, full: FloatBuffer, scratch: FloatBuffer)] = []
    /// Stages 2–3: released layer-size gradient buffers and ring scratch shards kept for the next unit
    /// (``SpareBuffers``), counted in their ledger categories while kept.
    var spareGradients: SpareBuffers, spareScratch: SpareBuffers

    /// Byte counters for the memory ledger.
    public private(set) var gradientBufferBytes = 0, peakGradientBufferBytes = 0
    public private(set) var communicationBytes = 0, peakCommunicationBytes = 0

    public init(plan: ShardPlan, stage: ZeroStage, communicator: Communicator, reductionsInFlight: Int) {
        precondition(reductionsInFlight >= 1, "GradientReducer: reductionsInFlight must be at least 1, got \(reductionsInFlight)")
        self.plan = plan
        self.stage = stage
        self.communicator = communicator
        self.reductionsInFlight = reductionsInFlight
        rank = communicator.rank
        // Accumulated into (read, then written) and zeroed by every step: faulted in now, written first.
        store = RoleBuffer(layout: plan.flatLayout(sharded: stage.shardsGradients, rank: rank), prefault: true)
        spareGradients = SpareBuffers(counts: plan.recurringCounts(\.paddedCount))
        spareScratch = SpareBuffers(counts: plan.recurringCounts(\.shardCount))
    }

    /// Rings still in flight when the reducer goes away (see ``ShardedParameters``): kept, never waited for.
    nonisolated(unsafe) static var abandoned: [AnyObject] = []

    deinit {
        guard !reductions.isEmpty else { return }
        Self.abandoned += reductions.flatMap { [$0.ring as AnyObject, $0.full, $0.scratch] }
    }

    public var gradientBytes: Int { store.bytes }

    // MARK: During the backward

    /// Runs `body` with the unit's full-size gradient to accumulate into; at stages 2–3 the
    /// reduce-scatter of what it accumulated starts when `body` returns.
    public func withGradients<R>(of unit: Int, _ body: (UnsafeMutableBufferPointer<Float>) throws -> R) throws -> R {
        guard stage.shardsGradients else { return try body(store.unit(unit)) }
        // Every element is accumulated into (`+=`, gemms with `beta = 1`): a new buffer is written first,
        // so its pages come in at the cost of a write, not of a zero-page read and a copy-on-write fault
        // each; a spare (a previous layer's) is zeroed.
        let (full, isNew, change) = spareGradients.take(count: plan.units[unit].paddedCount, prefault: true)
        gradientBufferBytes += change
        peakGradientBufferBytes = max(peakGradientBufferBytes, gradientBufferBytes)
        if !isNew { full.zero() }
        let result = try body(full.pointer)
        try reduce(unit, full)
        return result
    }

    private func reduce(_ unit: Int, _ full: FloatBuffer) throws {
        if communicator.size == 1 {
            // One rank: the gradient is the reduced gradient.
            add(UnsafeBufferPointer(full.pointer), into: store.unit(unit))
            gradientBufferBytes -= spareGradients.give(full)
            return
        }
        try waitUntil("a gradient reduce-scatter to finish before unit \(unit) (\(plan.units[unit].name))") {
            reductions.count < reductionsInFlight
        }
        let (scratch, _, change) = spareScratch.take(count: plan.units[unit].shardCount)
        communicationBytes += change
        peakCommunicationBytes = max(peakCommunicationBytes, communicationBytes)
        let ring = try communicator.startRingReduceScatter(full.pointer, scratch: scratch.pointer)
        reductions.append((unit, ring, full, scratch))
        try progress()
    }

    public var isIdle: Bool { reductions.isEmpty }

    /// Advances every ring in flight as far as its messages allow, then folds in the completed ones
    /// from the oldest on.
    public func progress() throws {
        for reduction in reductions { _ = try reduction.ring.test() }
        while let oldest = reductions.first, oldest.ring.isComplete {
            reductions.removeFirst()
            add(UnsafeBufferPointer(oldest.ring.result), into: store.unit(oldest.unit))
            gradientBufferBytes -= spareGradients.give(oldest.full)
            communicationBytes -= spareScratch.give(oldest.scratch)
        }
    }

    /// Completes every reduce-scatter in flight (the end of a micro-step).
    public func finish() throws {
        try waitUntil("gradient reduce-scatters") { reductions.isEmpty }
        gradientBufferBytes -= spareGradients.removeAll()
        communicationBytes -= spareScratch.removeAll()
    }

    private func add(_ source: UnsafeBufferPointer<Float>, into destination: UnsafeMutableBufferPointer<Float>) {
        precondition(source.count == destination.count, "GradientReducer: adding \(source.count) elements into \(destination.count)")
        let s = source.baseAddress!, d = destination.baseAddress!
        for i in 0..<source.count { d[i] += s[i] }
    }

    /// Polls until `done()`, advancing every ring in flight meanwhile. A ring moves only when its
    /// rank tests it, so a rank must never block in MPI on one operation while its rings wait: the
    /// other ranks could be waiting, in turn, for those rings. The communicator's `poll` backs off
    /// (spin, then growing sleeps) and gives up after `--collective-timeout`, naming `what`.
    private func waitUntil(_ what: @autoclosure () -> String, _ done: () throws -> Bool) throws {
        try communicator.poll(what()) {
            try progress()
            return try done()
        }
    }

    // MARK: After the last micro-batch

    /// The elements of unit `unit` this rank reduces, updates and counts in the norm: its shard
    /// (stage 0 updates everything, but the norm still sums each element once, on its owner).
    public func ownedRange(_ unit: Int) -> Range<Int> { plan.units[unit].range(rank: rank) }

    /// Brings each rank its summed gradient (stage 0: all of it, all-reduced unit by unit; stage 1:
    /// its shard, reduce-scattered round the ring; stages 2–3: already there) and returns the global
    /// L2 norm: the squares of the elements each rank owns, summed in Double, then all-reduced.
    public func reduce() throws -> Double {
        switch stage {
        case .zero:
            for index in plan.units.indices { try communicator.allReduce(store.unit(index), .sum) }
        case .one where communicator.size > 1:
            let largest = plan.units.map(\.shardCount).max() ?? 0
            let shard = FloatBuffer(count: largest)
            communicationBytes += shard.bytes
            peakCommunicationBytes = max(peakCommunicationBytes, communicationBytes)
            defer { communicationBytes -= shard.bytes }
            // The ring leaves each rank's sum in its own block of the full gradient (the others
            // hold partial sums, zeroed after the update); `shard` receives the incoming blocks.
            for (index, unit) in plan.units.enumerated() {
                try communicator.ringReduceScatter(store.unit(index), scratch: shard.slice(0..<unit.shardCount))
            }
        case .one, .two, .three:
            break
        }
        var sumSquares = 0.0
        if stage.shardsGradients {
            // The whole buffer is this rank's: one pass.
            sumSquares = VectorMath.sumOfSquares(UnsafeBufferPointer(store.storage.pointer))
        } else {
            for index in plan.units.indices {
                sumSquares += VectorMath.sumOfSquares(UnsafeBufferPointer(store.elements(ownedRange(index), of: index)))
            }
        }
        return try communicator.allReduce(sumSquares, .sum).squareRoot()
    }

    /// Zeroes every gradient (after the update): one pass over the buffer.
    public func zero() { store.storage.zero() }
}
