/// All-gather of arrays whose counts differ between ranks.
extension Communicator {
    /// Every rank's `values`, on every rank, in rank order (`result[r]` is rank `r`'s array).
    ///
    /// Counts may differ: one `MPI_Iallgather` of the counts, then one of the arrays padded with zeros
    /// to the longest (``allGather(_:into:)``, so the same pieces past ``maximumBytesPerCall`` and the
    /// same deadline and backoff through ``poll(_:until:)`` as every other collective). The padding
    /// costs `size × (longest − count)` elements of traffic and memory; `MPI_Iallgatherv` would avoid it
    /// but takes `int` displacements, which a gathered corpus can exceed. Peak memory: the padded
    /// buffer, `size × longest` elements.
    public func allGatherVariable<T: CollectiveElement & AdditiveArithmetic>(_ values: [T]) throws -> [[T]] {
        guard size > 1 else { return [values] }
        let counts = try allGather([Int64(values.count)]).map(Int.init)
        let longest = counts.max() ?? 0
        guard longest > 0 else { return counts.map { _ in [] } }
        let padded = values + [T](repeating: .zero, count: longest - values.count)
        let all = try allGather(padded)
        return counts.enumerated().map { rank, count in Array(all[(rank * longest)..<(rank * longest + count)]) }
    }
}
