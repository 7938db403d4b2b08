internal import CMPI

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// A sum reduce-scatter that goes round the ring of ranks in `size − 1` steps, with no buffer
/// besides the caller's: the ZeRO gradient reduce-scatter.
///
/// Open MPI 4.1's `MPI_Reduce_scatter_block` and `MPI_Ireduce_scatter_block` reduce the whole
/// buffer to rank 0 first (a unit-sized temporary there, two with 4–7 ranks or in libnbc's tree),
/// which for a 1 GiB embedding gradient is 1–2 GiB that only rank 0 pays. The ring reduces in
/// place: with `c = scratch.count`, at step `s` rank `r` sends block `r − s − 1` (mod N) of
/// `buffer` to rank `r + 1`, receives block `r − s − 2` from rank `r − 1` into `scratch` and adds
/// it into its own copy of that block. After `N − 1` steps block `r` of `buffer` holds the sum
/// over all ranks; the other blocks hold partial sums. Every rank sends and receives
/// `(N − 1)/N` of the buffer, like any bandwidth-optimal reduce-scatter.
///
/// Progress is driven by the caller: ``test()`` completes the current step if its messages have
/// arrived, adds, and posts the next (as many steps as are ready); ``wait()`` blocks step by step.
/// With a progress thread (``Communicator/startProgressThread()``) that thread calls ``test()`` as
/// well: the ring's state is touched only under its own lock, the additions go into the ring's own
/// buffers (untouched by the caller until completion), and a failure met by the thread is thrown
/// by the owner's next ``test()`` or ``wait()``.
/// A rank that blocks in ``wait()`` while other rings or collectives are in flight must make sure
/// the other ranks can finish without it (see `ZeroEngine`, which instead tests every operation in
/// flight in one loop): the ring advances only when its owner calls it.
public final class RingReduceScatter<T: CollectiveElement & BinaryFloatingPoint>: ProgressingOperation, ThreadDrivenOperation {
    private let buffer: UnsafeMutableBufferPointer<T>
    private let scratch: UnsafeMutableBufferPointer<T>
    private let handle: MPI_Comm?
    private let rank: Int, size: Int
    private let tag: Int32
    private let pieceLimit: Int
    /// The communicator whose deadline and backoff ``wait()`` uses.
    private unowned let communicator: Communicator
    /// The communicator's timeout when the ring started (for a `deinit` on the progress thread).
    private let timeout: Double
    /// Guards the state below: the owner's thread and the progress thread both test the ring.
    private let lock = OperationLock()
    /// The step whose messages are in flight; `size − 1` once complete.
    private var currentStep = 0
    private var requests: [MPI_Request?] = []
    private var statuses: [MPI_Status] = []
    private var completed = false
    /// The error that ended the ring, thrown again by every later ``test()``.
    private var failure: CollectiveError? = nil

    /// The step whose messages are in flight; `size − 1` once complete.
    public var step: Int { lock.withLock { currentStep } }
    /// Whether block `rank` of the buffer holds the reduced sum (or the ring failed: ``test()``
    /// throws the error).
    public var isComplete: Bool { lock.withLock { completed } }

    init(buffer: UnsafeMutableBufferPointer<T>, scratch: UnsafeMutableBufferPointer<T>, communicator: Communicator,
         tag: Int32, pieceLimit: Int) throws(CollectiveError) {
        self.buffer = buffer
        self.scratch = scratch
        self.communicator = communicator
        self.handle = communicator.handle
        self.rank = communicator.rank
        self.size = communicator.size
        self.tag = tag
        self.pieceLimit = pieceLimit
        self.timeout = communicator.collectiveTimeout
        if size == 1 || scratch.isEmpty || handle == nil {
            currentStep = size - 1
            completed = true
        } else {
            try post()
        }
    }

    /// The elements of one block.
    public var blockCount: Int { scratch.count }
    /// Block `rank` of the buffer: the reduced result once complete.
    public var result: UnsafeMutableBufferPointer<T> {
        UnsafeMutableBufferPointer(rebasing: buffer[(rank * blockCount)..<((rank + 1) * blockCount)])
    }

    private func block(_ index: Int) -> UnsafeMutablePointer<T> {
        buffer.baseAddress! + ((index % size + size) % size) * blockCount
    }

    /// Posts the receive and the send of `step`, in pieces of at most `pieceLimit` elements.
    private func post() throws(CollectiveError) {
        let left = Int32((rank - 1 + size) % size), right = Int32((rank + 1) % size)
        let send = block(rank - currentStep - 1)
        let type = T.checkedMPIDatatype
        requests.removeAll(keepingCapacity: true)
        for piece in Pieces(count: blockCount, limit: pieceLimit) {
            var receive: MPI_Request? = nil, transmit: MPI_Request? = nil
            try check(MPI_Irecv(scratch.baseAddress! + piece.offset, Int32(piece.count), type, left, tag, handle, &receive),
                      "MPI_Irecv", piece)
            requests.append(receive)
            try check(MPI_Isend(send + piece.offset, Int32(piece.count), type, right, tag, handle, &transmit),
                      "MPI_Isend", piece)
            requests.append(transmit)
        }
        statuses = [MPI_Status](repeating: MPI_Status(), count: requests.count)
    }

    /// Adds the received block into the buffer and posts the next step, or completes.
    private func advance() throws(CollectiveError) {
        Self.add(UnsafePointer(scratch.baseAddress!), into: block(rank - currentStep - 2), count: blockCount)
        currentStep += 1
        if currentStep == size - 1 {
            completed = true
            requests.removeAll()
        } else {
            try post()
        }
    }

    /// `target[i] += source[i]` for `i < count`. The class is generic and used from other modules,
    /// where its methods run unspecialised: a plain `+=` on `T` is then a call through `T`'s witness
    /// table per element (measured: 12% of a stage-3 SmolLM2 step's samples in the ring's additions and
    /// their value witnesses), so `Float` and `Double` go to concrete loops LLVM vectorises.
    static func add(_ source: UnsafePointer<T>, into target: UnsafeMutablePointer<T>, count: Int) {
        func add<F: BinaryFloatingPoint>(_: F.Type, _ body: (UnsafePointer<F>, UnsafeMutablePointer<F>) -> Void) {
            UnsafeRawPointer(source).withMemoryRebound(to: F.self, capacity: count) { s in
                UnsafeMutableRawPointer(target).withMemoryRebound(to: F.self, capacity: count) { t in body(s, t) }
            }
        }
        if T.self == Float.self {
            add(Float.self) { s, t in for i in 0..<count { t[i] += s[i] } }
        } else if T.self == Double.self {
            add(Double.self) { s, t in for i in 0..<count { t[i] += s[i] } }
        } else {
            for i in 0..<count { target[i] += source[i] }
        }
    }

    /// Completes every step whose messages have arrived, without blocking; whether the whole
    /// reduce-scatter is complete. Throws the ring's error, also one met earlier by the progress
    /// thread. The corresponding C function is `MPI_Testall`.
    public func test() throws(CollectiveError) -> Bool {
        try lock.withLock { () throws(CollectiveError) -> Bool in
            if let failure { throw failure }
            while !completed {
                var flag: Int32 = 0
                let code = MPI_Testall(Int32(requests.count), &requests, &flag, &statuses)
                try checkCompletion(code, "MPI_Testall")
                guard flag != 0 else { return false }
                try advance()
            }
            return true
        }
    }

    /// Blocks until this rank's part is complete, polling ``test()`` through the communicator's
    /// ``Communicator/poll(_:until:)`` (backoff, and a ``CollectiveError`` after
    /// ``Communicator/collectiveTimeout`` seconds).
    public func wait() throws(CollectiveError) {
        try communicator.wait("ring reduce-scatter", details) { () throws(CollectiveError) -> Bool in try test() }
    }

    /// ``test()``, for the communicator's waits, which advance every ring in flight, and for the
    /// progress thread.
    func progress() throws(CollectiveError) -> Bool { try test() }

    /// The step (`size − 1` once complete): the progress thread's sign that the ring moved.
    var progressMark: Int { step }

    private var details: String {
        "ring reduce-scatter, \(blockCount) × \(T.collectiveElementKind) per rank, step \(currentStep + 1) of \(size - 1), tag \(tag)"
    }

    private func check(_ code: Int32, _ operation: String, _ piece: Pieces.Piece) throws(CollectiveError) {
        guard code != zsft_success() else { return }
        completed = true
        let error = CollectiveError(operation: operation, rank: rank, size: size, errorCode: code,
                                    errorClass: mpiErrorClass(code), reason: mpiErrorString(code),
                                    details: details + piece.describe(total: blockCount))
        failure = error
        throw error
    }

    private func checkCompletion(_ code: Int32, _ operation: String) throws(CollectiveError) {
        guard code != zsft_success() else { return }
        completed = true
        let error = CollectiveError(completing: operation, code: code, statuses: statuses, rank: rank, size: size, details: details)
        requests.removeAll()
        failure = error
        throw error
    }

    deinit {
        // After a collective timeout the job is being aborted: waiting again would only delay it.
        guard !completed, !communicator.hasGivenUp else { return }
        ProcessRuntime.writeToStandardError(
            "zero-sft: warning: rank \(rank): \(details) was released without wait(); waiting for it now\n")
        if ProgressThread.isCurrent {
            // Released by its owner while the progress thread held it: finish it here, without the
            // communicator (its waits and counters belong to the rank's thread).
            if let problem = drain({ () throws(CollectiveError) -> Bool in try test() }, timeout: timeout) {
                ProcessRuntime.writeToStandardError("zero-sft: rank \(rank): \(problem)\n")
            }
            return
        }
        do { try wait() } catch {
            ProcessRuntime.writeToStandardError("zero-sft: rank \(rank): \(error)\n")
        }
    }
}

extension Communicator {
    /// Starts a sum reduce-scatter of `buffer` round the ring of ranks (see ``RingReduceScatter``).
    ///
    /// `buffer.count == scratch.count × size` on every rank, with the same `scratch.count`
    /// everywhere; the two must not overlap. `buffer` is the accumulator: when the request completes,
    /// block `rank` (``RingReduceScatter/result``) holds the sum over ranks and the other blocks
    /// partial sums. Keep both buffers allocated and untouched until then. Every rank must start its
    /// rings in the same order (each gets the next tag). With one rank it is complete at once.
    public func startRingReduceScatter<T: CollectiveElement & BinaryFloatingPoint>(
        _ buffer: UnsafeMutableBufferPointer<T>, scratch: UnsafeMutableBufferPointer<T>
    ) throws -> RingReduceScatter<T> {
        precondition(
            buffer.count == scratch.count * size,
            "ringReduceScatter: buffer has \(buffer.count) elements, expected scratch.count × size = \(scratch.count) × \(size)")
        if let b = buffer.baseAddress, let s = scratch.baseAddress {
            precondition(!(UnsafePointer(b) < UnsafePointer(s) + scratch.count && UnsafePointer(s) < UnsafePointer(b) + buffer.count),
                         "ringReduceScatter: buffer and scratch overlap")
        }
        try checkConsistency("ringReduceScatter", bytes: buffer.count * MemoryLayout<T>.stride)
        if size > 1 { countTraffic(bytes: buffer.count * MemoryLayout<T>.stride, phases: 1) }
        let tag = nextRingTag
        nextRingTag = (nextRingTag + 1) % 32_767  // the least MPI_TAG_UB allows
        let ring = try RingReduceScatter(buffer: buffer, scratch: scratch, communicator: self,
                                         tag: tag, pieceLimit: elementsPerCall(T.self, ranksPerCall: 1))
        if !ring.isComplete {
            ringsInFlight.append(WeakOperation(operation: ring))
            driveInBackground(ring)
        }
        return ring
    }

    /// ``startRingReduceScatter(_:scratch:)`` and ``RingReduceScatter/wait()``: the blocking form,
    /// for when nothing else is in flight.
    public func ringReduceScatter<T: CollectiveElement & BinaryFloatingPoint>(
        _ buffer: UnsafeMutableBufferPointer<T>, scratch: UnsafeMutableBufferPointer<T>
    ) throws {
        try startRingReduceScatter(buffer, scratch: scratch).wait()
    }
}

/// Yields the processor: for loops that poll requests while other ranks share the cores.
///
/// Prefer ``Communicator/poll(_:until:)``, which also backs off and times out.
public func yieldProcessor() { sched_yield() }
