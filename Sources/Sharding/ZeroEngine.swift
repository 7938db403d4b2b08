import Collectives
import Kernels
import Models

/// The sharded training state of one rank and the collectives that move it, stage 0 to 3.
///
/// Parameters, gradients and AdamW moments are one buffer per unit each, laid out as the unit's
/// ``ParameterLayout`` (padded to a multiple of the rank count). What a rank keeps of each depends on
/// the stage (see ``ZeroStage``); the model reaches them through ``UnitStore``, following
/// ``DecoderModel/parameterSchedule(training:)``, which lets stage 3 start the all-gather of the
/// next unit while the current one computes. Reduce-scatters of gradients (stages 2–3) are started
/// when the model releases a unit's gradient and completed while the backward goes on, at most
/// ``reductionsInFlight`` at a time: each holds a full-size gradient buffer, so the cap is what
/// bounds a rank's gradient memory when the ranks drift apart. Gradient reduce-scatters (stages 1–3)
/// go round a ring of ranks (``RingReduceScatter``) in the full-size buffer itself, so no rank pays
/// for a second full-size copy inside MPI.
public final class ZeroEngine: UnitStore {
    public let stage: ZeroStage
    public let plan: ShardPlan
    public let layout: ParameterLayout
    public let communicator: Communicator
    public var optimizer: AdamW
    /// Stages 2–3: the most gradient reduce-scatters in flight at once (a rank that reaches the cap
    /// completes the oldest before starting another).
    public let reductionsInFlight: Int
    let rank: Int

    /// Stages 0–2: the full padded unit; stage 3: this rank's shard.
    let parameterStore: [FloatBuffer]
    /// Stages 0–1: the full padded unit; stages 2–3: this rank's shard.
    let gradientStore: [FloatBuffer]
    /// Stage 0: full; stages 1–3: this rank's shard.
    let momentM: [FloatBuffer], momentV: [FloatBuffer]

    /// Stage 3: units gathered for use, and all-gathers in flight (prefetches).
    var gathered: [Int: FloatBuffer] = [:]
    var gathering: [Int: CollectiveRequest] = [:]
    /// Stages 2–3: full-size gradient buffers handed to the model, and reduce-scatters in flight.
    var gradientBuffers: [Int: FloatBuffer] = [:]
    /// Oldest first; each ring reduces in `full` and receives into `scratch` (one shard).
    var reductions: [(unit: Int, ring: RingReduceScatter<Float>, full: FloatBuffer, scratch: FloatBuffer)] = []

    var schedule: [Int] = []
    var cursor = 0
    var stepCount = 0

    /// Byte counters for the memory ledger.
    public private(set) var gatheredBytes = 0, peakGatheredBytes = 0
    public private(set) var gradientBufferBytes = 0, peakGradientBufferBytes = 0
    public private(set) var communicationBytes = 0, peakCommunicationBytes = 0

    /// Allocates this rank's state and fills its parameters with `initialize(unit, elements, destination)`,
    /// called only for the ranges this rank keeps (elements past the unit's count are padding: zero).
    public init(
        layout: ParameterLayout, stage: ZeroStage, communicator: Communicator, optimizer: AdamW,
        reductionsInFlight: Int = ZeroEngine.defaultReductionsInFlight,
        initialize: (_ unit: Int, _ elements: Range<Int>, _ destination: UnsafeMutableBufferPointer<Float>) throws -> Void
    ) throws {
        self.layout = layout
        self.stage = stage
        self.communicator = communicator
        self.optimizer = optimizer
        precondition(reductionsInFlight >= 1, "ZeroEngine: reductionsInFlight must be at least 1, got \(reductionsInFlight)")
        self.reductionsInFlight = reductionsInFlight
        self.rank = communicator.rank
        let plan = ShardPlan(layout: layout, ranks: communicator.size)
        self.plan = plan
        parameterStore = plan.units.map { FloatBuffer(count: stage.shardsParameters ? $0.shardCount : $0.paddedCount) }
        gradientStore = plan.units.map { FloatBuffer(count: stage.shardsGradients ? $0.shardCount : $0.paddedCount) }
        momentM = plan.units.map { FloatBuffer(count: stage.shardsMoments ? $0.shardCount : $0.paddedCount) }
        momentV = plan.units.map { FloatBuffer(count: stage.shardsMoments ? $0.shardCount : $0.paddedCount) }
        for (index, unit) in plan.units.enumerated() {
            let range = stage.shardsParameters ? unit.range(rank: rank) : 0..<unit.paddedCount
            let valid = range.clamped(to: 0..<unit.count)
            if !valid.isEmpty {
                let offset = valid.lowerBound - range.lowerBound
                try initialize(index, valid, parameterStore[index].slice(offset..<(offset + valid.count)))
            }
        }
    }

    /// The default cap on reduce-scatters in flight: one layer's gradient travelling while the next
    /// is computed, and one more so that a rank slightly ahead does not wait at every unit.
    public static let defaultReductionsInFlight = 2

    /// Collectives still in flight when the engine goes away (an error unwound a step): they and their
    /// buffers are kept alive, never waited for. Waiting could hang this rank in a collective the others
    /// will not join, before `Job.run` gets to abort the job; freeing the buffers could let MPI write
    /// into freed memory.
    nonisolated(unsafe) static var abandoned: [AnyObject] = []

    deinit {
        guard !gathering.isEmpty || !reductions.isEmpty else { return }
        Self.abandoned += gathering.values.map { $0 as AnyObject } + Array(gathered.values)
        Self.abandoned += reductions.flatMap { [$0.ring as AnyObject, $0.full, $0.scratch] }
    }

    // MARK: Bytes held

    public var parameterBytes: Int { parameterStore.reduce(0) { $0 + $1.bytes } }
    public var gradientBytes: Int { gradientStore.reduce(0) { $0 + $1.bytes } }
    public var momentBytes: Int { momentM.reduce(0) { $0 + $1.bytes } + momentV.reduce(0) { $0 + $1.bytes } }

    // MARK: One micro-step

    /// Starts a micro-step whose parameter requests follow `schedule`.
    public func beginMicroStep(schedule: [Int]) {
        precondition(gathered.isEmpty && gathering.isEmpty && gradientBuffers.isEmpty, "ZeroEngine: previous micro-step not finished")
        self.schedule = schedule
        cursor = 0
    }

    /// Completes the micro-step's outstanding reduce-scatters.
    public func endMicroStep() throws {
        precondition(cursor == schedule.count, "ZeroEngine: micro-step used \(cursor) of \(schedule.count) scheduled units")
        precondition(gathered.isEmpty && gradientBuffers.isEmpty, "ZeroEngine: units still held at the end of the micro-step")
        try waitUntil { reductions.isEmpty }
    }

    public func parameters(unit: Int) throws -> UnsafeBufferPointer<Float> {
        precondition(cursor < schedule.count && schedule[cursor] == unit,
                     "ZeroEngine: unit \(unit) requested out of schedule (expected \(cursor < schedule.count ? String(schedule[cursor]) : "none"))")
        cursor += 1
        try progressReductions()
        guard stage.shardsParameters else { return UnsafeBufferPointer(parameterStore[unit].pointer) }
        if let request = gathering.removeValue(forKey: unit) { try wait(for: request, unit: unit) }
        if gathered[unit] == nil { try wait(for: startGather(unit), unit: unit) }
        // Prefetch the next unit while this one computes.
        if cursor < schedule.count {
            let next = schedule[cursor]
            if gathered[next] == nil { gathering[next] = try startGather(next) }
        }
        return UnsafeBufferPointer(gathered[unit]!.pointer)
    }

    public func releaseParameters(unit: Int) throws {
        guard stage.shardsParameters, let buffer = gathered.removeValue(forKey: unit) else { return }
        precondition(gathering[unit] == nil, "ZeroEngine: released unit \(unit) with its gather in flight")
        gatheredBytes -= buffer.bytes
    }

    public func gradients(unit: Int) throws -> UnsafeMutableBufferPointer<Float> {
        guard stage.shardsGradients else { return gradientStore[unit].pointer }
        if let buffer = gradientBuffers[unit] { return buffer.pointer }
        let buffer = FloatBuffer(count: plan.units[unit].paddedCount)
        gradientBuffers[unit] = buffer
        gradientBufferBytes += buffer.bytes
        peakGradientBufferBytes = max(peakGradientBufferBytes, gradientBufferBytes)
        return buffer.pointer
    }

    public func releaseGradients(unit: Int) throws {
        guard stage.shardsGradients, let full = gradientBuffers.removeValue(forKey: unit) else { return }
        if communicator.size == 1 {
            // One rank: the gradient is the reduced gradient.
            add(UnsafeBufferPointer(full.pointer), into: gradientStore[unit].pointer)
            gradientBufferBytes -= full.bytes
            return
        }
        try waitUntil("a gradient reduce-scatter to finish before unit \(unit) (\(plan.units[unit].name))") { reductions.count < reductionsInFlight }
        let scratch = FloatBuffer(count: plan.units[unit].shardCount)
        communicationBytes += scratch.bytes
        peakCommunicationBytes = max(peakCommunicationBytes, communicationBytes)
        let ring = try communicator.startRingReduceScatter(full.pointer, scratch: scratch.pointer)
        reductions.append((unit, ring, full, scratch))
        try progressReductions()
    }

    private func startGather(_ unit: Int) throws -> CollectiveRequest {
        let buffer = FloatBuffer(count: plan.units[unit].paddedCount)
        gathered[unit] = buffer
        gatheredBytes += buffer.bytes
        peakGatheredBytes = max(peakGatheredBytes, gatheredBytes)
        return try communicator.startAllGather(UnsafeBufferPointer(parameterStore[unit].pointer), into: buffer.pointer)
    }

    /// Advances every ring in flight as far as its messages allow, then folds in the completed ones
    /// from the oldest on (in start order, so that the two reductions of a tied embedding always
    /// add up in the same order).
    private func progressReductions() throws {
        for reduction in reductions { _ = try reduction.ring.test() }
        while let oldest = reductions.first, oldest.ring.isComplete {
            reductions.removeFirst()
            add(UnsafeBufferPointer(oldest.ring.result), into: gradientStore[oldest.unit].pointer)
            gradientBufferBytes -= oldest.full.bytes
            communicationBytes -= oldest.scratch.bytes
        }
    }

    private func add(_ source: UnsafeBufferPointer<Float>, into destination: UnsafeMutableBufferPointer<Float>) {
        precondition(source.count == destination.count, "ZeroEngine: adding \(source.count) elements into \(destination.count)")
        let s = source.baseAddress!, d = destination.baseAddress!
        for i in 0..<source.count { d[i] += s[i] }
    }

    /// Polls until `done()`, advancing every ring in flight meanwhile. A ring moves only when its
    /// rank tests it, so a rank must never block in MPI on one operation while its rings wait: the
    /// other ranks could be waiting, in turn, for those rings.
    /// The communicator's `poll` backs off and gives up after `--collective-timeout`, naming `what`.
    private func waitUntil(_ what: @autoclosure () -> String = "gradient reduce-scatters", _ done: () throws -> Bool) throws {
        try communicator.poll(what()) {
            try progressReductions()
            return try done()
        }
    }

    /// Waits for an all-gather (blocking in MPI when no ring is in flight).
    private func wait(for request: CollectiveRequest, unit: Int) throws {
        try waitUntil("all-gather of unit \(unit) (\(plan.units[unit].name))") { try request.test() }
    }

    // MARK: The optimizer step

    /// The range of unit `unit` this rank reduces and updates: its shard (stage 0 updates everything,
    /// but the norm is still summed over shards so that every element counts once).
    func ownedRange(_ unit: Int) -> Range<Int> { plan.units[unit].range(rank: rank) }

    /// After the last micro-batch: brings each rank its summed gradient (stage 0: all of it, all-reduced;
    /// stage 1: its shard, reduce-scattered; stages 2–3: already there) and returns the global L2 norm.
    public func reduceGradients() throws -> Double {
        switch stage {
        case .zero:
            for unit in gradientStore { try communicator.allReduce(unit.pointer, .sum) }
        case .one where communicator.size > 1:
            let largest = plan.units.map(\.shardCount).max() ?? 0
            let shard = FloatBuffer(count: largest)
            communicationBytes += shard.bytes
            peakCommunicationBytes = max(peakCommunicationBytes, communicationBytes)
            defer { communicationBytes -= shard.bytes }
            // The ring leaves each rank's sum in its own block of the full gradient (the others
            // hold partial sums, zeroed after the update); `shard` receives the incoming blocks.
            for (index, unit) in plan.units.enumerated() {
                try communicator.ringReduceScatter(gradientStore[index].pointer, scratch: shard.slice(0..<unit.shardCount))
            }
        case .one, .two, .three:
            break
        }
        var sumSquares = 0.0
        for index in plan.units.indices {
            let gradient = ownedGradient(index)
            var partial: Float = 0
            for g in gradient { partial += g * g }
            sumSquares += Double(partial)
        }
        return try communicator.allReduce(sumSquares, .sum).squareRoot()
    }

    /// The reduced gradient of the elements this rank owns.
    func ownedGradient(_ unit: Int) -> UnsafeMutableBufferPointer<Float> {
        stage.shardsGradients ? gradientStore[unit].pointer : gradientStore[unit].slice(ownedRange(unit))
    }

    /// AdamW on this rank's state, then (stages 1–2) all-gathers the updated parameter shards and zeroes the gradients.
    public func optimizerStep(learningRate: Float, gradientScale: Float) throws {
        stepCount += 1
        for (index, unit) in plan.units.enumerated() {
            let owned = stage == .zero ? 0..<unit.paddedCount : ownedRange(index)
            let parameters = stage.shardsParameters ? parameterStore[index].pointer : parameterStore[index].slice(owned)
            let gradients = stage == .zero ? gradientStore[index].pointer : ownedGradient(index)
            // Split the owned range where weight decay switches on or off (matrices vs norms and biases).
            for (segment, decays) in decaySegments(unit: index, range: owned) {
                let local = (segment.lowerBound - owned.lowerBound)..<(segment.upperBound - owned.lowerBound)
                optimizer.update(parameters: parameters.view(local), gradients: UnsafeBufferPointer(gradients.view(local)),
                                 m: momentM[index].slice(local), v: momentV[index].slice(local),
                                 step: stepCount, learningRate: learningRate, gradientScale: gradientScale, decay: decays)
            }
            if stage == .one || stage == .two {
                let full = parameterStore[index].pointer
                try communicator.allGather(UnsafeBufferPointer(full.view(owned)), into: full)
            }
        }
        for buffer in gradientStore { buffer.zero() }
    }

    /// The pieces of `range` (in unit `unit`) with their weight-decay setting; padding does not decay.
    func decaySegments(unit: Int, range: Range<Int>) -> [(Range<Int>, Bool)] {
        var segments: [(Range<Int>, Bool)] = []
        for tensor in layout.units[unit].tensors {
            let overlap = range.clamped(to: tensor.range)
            if !overlap.isEmpty { segments.append((overlap, tensor.decays)) }
        }
        let pad = range.clamped(to: layout.units[unit].count..<Int.max)
        if !pad.isEmpty { segments.append((pad, false)) }
        return segments
    }

    // MARK: Whole-model access (checkpoints, checksums, tests)

    /// The full parameters of `unit` (unpadded), gathered from every rank's shard at stage 3.
    /// Every rank must call it (a collective at stage 3).
    public func fullParameters(unit: Int) throws -> [Float] {
        let count = layout.units[unit].count
        guard stage.shardsParameters else { return Array(parameterStore[unit].pointer.prefix(count)) }
        let buffer = FloatBuffer(count: plan.units[unit].paddedCount)
        try communicator.allGather(UnsafeBufferPointer(parameterStore[unit].pointer), into: buffer.pointer)
        return Array(buffer.pointer.prefix(count))
    }

    /// A checksum of every parameter this rank owns, summed over ranks: identical on all ranks.
    public func parameterChecksum() throws -> Double {
        var local = 0.0
        for (index, unit) in plan.units.enumerated() {
            let range = unit.range(rank: rank)
            let values = stage.shardsParameters ? parameterStore[index].pointer : parameterStore[index].slice(range)
            var partial = 0.0
            for (i, x) in values.enumerated() { partial += Double(x) * (1 + Double((range.lowerBound + i) % 7) * 0.125) }
            local += partial
        }
        return try communicator.allReduce(local, .sum)
    }
}
