internal import CMPI

/// All-gather and reduce-scatter: the two collectives of a ZeRO step, over equal per-rank shards.
///
/// Layout: with `c = shard.count`, the full buffer has `c * size` elements and rank `r` owns
/// `[r * c, (r + 1) * c)`. Pad the full buffer to a multiple of `size` to shard a length that
/// does not divide evenly.
extension Communicator {
    /// Gathers every rank's shard into `output`: rank `r`'s shard lands at `[r * c, (r + 1) * c)`.
    ///
    /// `output.count == shard.count * size` on every rank, with the same `shard.count` everywhere.
    /// **In place:** when `shard` is exactly this rank's slice of `output` (same address, same
    /// count), the shard is read from `output` (`MPI_IN_PLACE`); any other overlap is a
    /// programmer error. The corresponding C function is `MPI_Iallgather`, waited for through
    /// ``poll(_:until:)``.
    public func allGather<T: CollectiveElement>(_ shard: UnsafeBufferPointer<T>, into output: UnsafeMutableBufferPointer<T>) throws {
        try startAllGather(shard, into: output).wait()
    }

    /// Gathers every rank's `values` into one array in rank order (equal counts on every rank).
    ///
    /// Checks that the counts agree first (one small all-reduce) and throws when they do not.
    public func allGather<T: CollectiveElement>(_ values: [T]) throws -> [T] {
        if size > 1 {
            let extremes = try allReduce([Int64(values.count), -Int64(values.count)], .max)
            guard extremes[0] == -extremes[1] else {
                throw CollectiveError(
                    operation: "allGather", rank: rank, size: size,
                    reason: "ranks passed different counts (from \(-extremes[1]) to \(extremes[0])); this rank passed \(values.count)")
            }
        }
        return try [T](unsafeUninitializedCapacity: values.count * size) { output, initialised in
            try values.withUnsafeBufferPointer { shard in try allGather(shard, into: output) }
            initialised = values.count * size
        }
    }

    /// Reduces `input` over all ranks and keeps this rank's block: `shard[i] ← op over ranks q of
    /// input_q[rank * c + i]` with `c = shard.count`.
    ///
    /// `input.count == shard.count * size` on every rank; `input` and `shard` must not overlap.
    /// The corresponding C function is `MPI_Ireduce_scatter_block` (one `MPI_Ireduce` per rank
    /// block and piece when the call exceeds ``maximumBytesPerCall``), waited for through
    /// ``poll(_:until:)``.
    public func reduceScatter<T: CollectiveElement>(
        _ input: UnsafeBufferPointer<T>, into shard: UnsafeMutableBufferPointer<T>, _ op: ReductionOperation
    ) throws {
        try startReduceScatter(input, into: shard, op).wait()
    }

    /// Starts ``allGather(_:into:)`` without waiting for it (`MPI_Iallgather`).
    ///
    /// The buffers must stay valid and untouched until the returned request completes. Several
    /// requests may be in flight at once; every rank must start them in the same order.
    public func startAllGather<T: CollectiveElement>(
        _ shard: UnsafeBufferPointer<T>, into output: UnsafeMutableBufferPointer<T>
    ) throws -> CollectiveRequest {
        try checkConsistency("allGather", bytes: output.count * MemoryLayout<T>.stride)
        if handle != nil { countTraffic(bytes: output.count * MemoryLayout<T>.stride, phases: 1) }
        var pending = PendingCalls()
        do {
            try allGatherCalls(shard, into: output, nonBlocking: true, &pending)
        } catch {
            pending.freeDatatypes()
            throw error
        }
        return CollectiveRequest(
            operation: "MPI_Iallgather", details: "\(shard.count) × \(T.collectiveElementKind) per rank",
            communicator: self, pending: pending)
    }

    /// Starts ``reduceScatter(_:into:_:)`` without waiting for it (`MPI_Ireduce_scatter_block`).
    ///
    /// The buffers must stay valid and untouched until the returned request completes. Several
    /// requests may be in flight at once; every rank must start them in the same order.
    public func startReduceScatter<T: CollectiveElement>(
        _ input: UnsafeBufferPointer<T>, into shard: UnsafeMutableBufferPointer<T>, _ op: ReductionOperation
    ) throws -> CollectiveRequest {
        try checkConsistency("reduceScatter \(op)", bytes: input.count * MemoryLayout<T>.stride)
        if handle != nil { countTraffic(bytes: input.count * MemoryLayout<T>.stride, phases: 1) }
        var pending = PendingCalls()
        try reduceScatterCalls(input, into: shard, op, nonBlocking: true, &pending)
        return CollectiveRequest(
            operation: "MPI_Ireduce_scatter_block", details: "\(shard.count) × \(T.collectiveElementKind) per rank, \(op)",
            communicator: self, pending: pending)
    }

    // MARK: Implementation

    private func allGatherCalls<T: CollectiveElement>(
        _ shard: UnsafeBufferPointer<T>, into output: UnsafeMutableBufferPointer<T>, nonBlocking: Bool,
        _ pending: inout PendingCalls
    ) throws {
        let count = shard.count
        precondition(
            output.count == count * size,
            "allGather: output has \(output.count) elements, expected shard.count × size = \(count) × \(size) = \(count * size)")
        let type = T.checkedMPIDatatype
        guard count > 0, let source = shard.baseAddress, let destination = output.baseAddress else { return }
        let slot = destination + rank * count
        let inPlace = UnsafePointer(slot) == source
        precondition(
            inPlace || !overlaps(source, count, UnsafePointer(destination), output.count),
            "allGather: shard overlaps output without being exactly rank \(rank)'s slice [\(rank * count), \((rank + 1) * count))")
        guard let handle else {
            if !inPlace { slot.update(from: source, count: count) }
            return
        }
        let kind = T.collectiveElementKind
        let details = "\(count) × \(kind) per rank, \(count * size) in total\(inPlace ? ", in place" : "")"
        func send(_ offset: Int) -> UnsafeRawPointer? {
            inPlace ? UnsafeRawPointer(zsft_in_place()) : UnsafeRawPointer(source + offset)
        }
        let piecePerRank = elementsPerCall(T.self, ranksPerCall: size)
        if count <= piecePerRank {
            if nonBlocking {
                var request: MPI_Request? = nil
                try check(
                    MPI_Iallgather(send(0), Int32(count), type, destination, Int32(count), type, handle, &request),
                    "MPI_Iallgather", details)
                pending.requests.append(request)
            } else {
                try check(
                    MPI_Allgather(send(0), Int32(count), type, destination, Int32(count), type, handle),
                    "MPI_Allgather", details)
            }
            return
        }
        // Chunked: piece [o, o + k) of rank r's block belongs at destination + r * count + o. One
        // receive element is k contiguous elements resized to the extent of a whole rank block, so
        // one call places every rank's piece.
        for piece in Pieces(count: count, limit: piecePerRank) {
            let pieceDetails = details + piece.describe(total: count)
            let blockType = try rankBlockType(
                type, count: piece.count, extentBytes: count * MemoryLayout<T>.stride, details: pieceDetails)
            pending.datatypes.append(blockType)
            if nonBlocking {
                var request: MPI_Request? = nil
                try check(
                    MPI_Iallgather(
                        send(piece.offset), Int32(piece.count), type, destination + piece.offset, 1, blockType, handle,
                        &request),
                    "MPI_Iallgather", pieceDetails)
                pending.requests.append(request)
            } else {
                try check(
                    MPI_Allgather(send(piece.offset), Int32(piece.count), type, destination + piece.offset, 1, blockType, handle),
                    "MPI_Allgather", pieceDetails)
            }
        }
    }

    private func reduceScatterCalls<T: CollectiveElement>(
        _ input: UnsafeBufferPointer<T>, into shard: UnsafeMutableBufferPointer<T>, _ op: ReductionOperation,
        nonBlocking: Bool, _ pending: inout PendingCalls
    ) throws {
        let count = shard.count
        precondition(
            input.count == count * size,
            "reduceScatter: input has \(input.count) elements, expected shard.count × size = \(count) × \(size) = \(count * size)")
        let type = T.checkedMPIDatatype
        guard count > 0, let source = input.baseAddress, let destination = shard.baseAddress else { return }
        precondition(
            !overlaps(source, input.count, UnsafePointer(destination), count),
            "reduceScatter: input and shard overlap; pass separate buffers")
        guard let handle else {
            destination.update(from: source, count: count)
            return
        }
        let kind = T.collectiveElementKind
        let details = "\(count) × \(kind) per rank, \(count * size) in total, \(op)"
        if count <= elementsPerCall(T.self, ranksPerCall: size) {
            if nonBlocking {
                var request: MPI_Request? = nil
                try check(
                    MPI_Ireduce_scatter_block(source, destination, Int32(count), type, op.mpiOperation, handle, &request),
                    "MPI_Ireduce_scatter_block", details)
                pending.requests.append(request)
            } else {
                try check(
                    MPI_Reduce_scatter_block(source, destination, Int32(count), type, op.mpiOperation, handle),
                    "MPI_Reduce_scatter_block", details)
            }
            return
        }
        // Chunked: predefined reductions are not defined on derived datatypes, so each rank block
        // is reduced to its owner separately, in contiguous pieces.
        for root in 0..<size {
            for piece in Pieces(count: count, limit: elementsPerCall(T.self, ranksPerCall: 1)) {
                let send = source + root * count + piece.offset
                let receive = root == rank ? destination + piece.offset : nil
                let pieceDetails = details + ", block of rank \(root)" + piece.describe(total: count)
                if nonBlocking {
                    var request: MPI_Request? = nil
                    try check(
                        MPI_Ireduce(send, receive, Int32(piece.count), type, op.mpiOperation, Int32(root), handle, &request),
                        "MPI_Ireduce", pieceDetails)
                    pending.requests.append(request)
                } else {
                    try check(
                        MPI_Reduce(send, receive, Int32(piece.count), type, op.mpiOperation, Int32(root), handle),
                        "MPI_Reduce", pieceDetails)
                }
            }
        }
    }

    /// `count` contiguous elements of `element`, resized to an extent of `extentBytes`.
    private func rankBlockType(
        _ element: MPI_Datatype?, count: Int, extentBytes: Int, details: String
    ) throws(CollectiveError) -> MPI_Datatype? {
        var contiguous: MPI_Datatype? = nil
        try check(MPI_Type_contiguous(Int32(count), element, &contiguous), "MPI_Type_contiguous", details)
        defer { MPI_Type_free(&contiguous) }
        var resized: MPI_Datatype? = nil
        try check(MPI_Type_create_resized(contiguous, 0, extentBytes, &resized), "MPI_Type_create_resized", details)
        let code = MPI_Type_commit(&resized)
        if code != zsft_success() { MPI_Type_free(&resized) }
        try check(code, "MPI_Type_commit", details)
        return resized
    }
}

/// Whether `[a, a + aCount)` and `[b, b + bCount)` share memory.
private func overlaps<T>(_ a: UnsafePointer<T>, _ aCount: Int, _ b: UnsafePointer<T>, _ bCount: Int) -> Bool {
    a < b + bCount && b < a + aCount
}
