import Kernels

/// Freed transient buffers kept for the next allocation of the same size: at most one per size, and
/// only for the sizes ``ShardPlan/recurringCounts(_:)`` names (those of two or more units: the
/// layers'). A stage-3 pass gathers, widens and reduces layer after layer; without spares every one
/// of those buffers is freshly mapped memory, which the kernel zeroes page by page on first touch
/// (`clear_page_erms`: 6.7% of a stage-3 SmolLM2 rank's samples with `--param-dtype bf16`, perf,
/// 2 ranks × 1 thread, 4 × 256).
///
/// A spare is kept only while buffers of its size keep coming: asking for a size that is not kept
/// (a unique unit: the embedding, the final unit) first frees every spare, and so does the end of
/// the pass (``removeAll()``). In the layers' steady state the spare is the buffer the next layer
/// takes, so a rank never holds more than without spares; its owner counts a spare in its ledger
/// category while it keeps it, and ``MemoryPlanner`` replays the same rule.
struct SpareBuffers {
    /// Element counts worth keeping a spare of.
    let counts: Set<Int>
    private var spares: [Int: FloatBuffer] = [:]

    init(counts: Set<Int>) { self.counts = counts }

    /// A buffer of `count` floats: the spare of that size if there is one (contents left from its
    /// last use, `isNew` false), else a fresh zeroed one (``FloatBuffer/init(count:prefault:)``).
    /// `heldChange`: what the owner's ledger grows by — the new buffer's bytes (0 for a spare), less
    /// those of the spares let go first because `count` is not a kept size.
    mutating func take(count: Int, prefault: Bool = false) -> (buffer: FloatBuffer, isNew: Bool, heldChange: Int) {
        if let spare = spares.removeValue(forKey: count) { return (spare, false, 0) }
        let freed = counts.contains(count) ? 0 : removeAll()
        let buffer = FloatBuffer(count: count, prefault: prefault)
        return (buffer, true, buffer.bytes - freed)
    }

    /// Gives `buffer` back: kept as the spare of its size when `keep` allows, the size recurs and no
    /// spare of it is kept yet, else let go. Returns what the owner's ledger shrinks by (0 when kept).
    mutating func give(_ buffer: FloatBuffer, keep: Bool = true) -> Int {
        guard keep, counts.contains(buffer.count), spares[buffer.count] == nil else { return buffer.bytes }
        spares[buffer.count] = buffer
        return 0
    }

    /// Frees every spare; their bytes.
    @discardableResult
    mutating func removeAll() -> Int {
        let bytes = spares.values.reduce(0) { $0 + $1.bytes }
        spares.removeAll()
        return bytes
    }
}

extension ShardPlan {
    /// The element counts of `size(unit)` shared by two or more units (a model's layers): the sizes
    /// ``SpareBuffers`` keeps.
    func recurringCounts(_ size: (ShardedUnit) -> Int) -> Set<Int> {
        var seen: [Int: Int] = [:]
        for unit in units { seen[size(unit), default: 0] += 1 }
        return Set(seen.filter { $0.value >= 2 }.keys)
    }
}
