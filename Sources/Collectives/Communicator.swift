internal import CMPI
import Synchronization
#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// The ranks of one job and the collectives between them: a Swift-typed `MPI_COMM_WORLD`.
///
/// Obtain it with ``world()``. Started by `mpirun` (or another launcher), it initialises MPI once
/// with `MPI_Init_thread(MPI_THREAD_FUNNELED)` and duplicates `MPI_COMM_WORLD` with the error
/// handler `MPI_ERRORS_RETURN`, so every MPI failure becomes a thrown ``CollectiveError``.
/// Started directly (no `OMPI_COMM_WORLD_SIZE`, `PMIX_RANK` or `PMI_RANK` in the environment) it
/// is a one-rank communicator that never touches MPI: reductions and broadcasts leave the data as
/// it is and gathers/scatters are copies.
///
/// Not `Sendable`: make every call from the thread that called ``world()`` first (MPI is
/// initialised `FUNNELED`; `MULTIPLE` when a progress thread also tests the collectives in flight,
/// see ``startProgressThread()``). Counts are `Int`; a collective whose arguments do not fit one MPI call
/// (more than ``maximumBytesPerCall`` bytes, default `Int32.max`) is split into several calls.
/// Buffer sizes must agree on every rank (a programmer error otherwise, which MPI may report as
/// `MPI_ERR_TRUNCATE` or not at all).
public final class Communicator {
    /// This process's rank, in `0 ..< size`.
    public let rank: Int
    /// The number of ranks in the job.
    public let size: Int
    /// The name of the host this rank runs on (`MPI_Get_processor_name`, or `gethostname`
    /// without MPI).
    public var hostName: String { storedHostName }
    /// Whether collectives go through MPI (`false` in the one-rank mode without a launcher).
    public var isUsingMPI: Bool { handle != nil }
    /// The most bytes a single MPI call moves in total (summed over ranks for gathers and
    /// scatters). Larger collectives are split into pieces; the default `Int32.max` keeps every
    /// `int` count and byte displacement inside MPI in range. Must be the same on every rank;
    /// lowering it is useful to exercise the chunked paths with small buffers.
    public var maximumBytesPerCall: Int = Int(Int32.max) {
        didSet {
            precondition(maximumBytesPerCall >= 1, "maximumBytesPerCall must be positive, got \(maximumBytesPerCall)")
        }
    }

    /// Seconds a rank waits for a collective before it gives up and the job is aborted (default
    /// 600; `.infinity` waits forever). The message names the collective, ``context`` and the rank.
    /// See ``poll(_:until:)``.
    public var collectiveTimeout: Double = 600 {
        didSet {
            precondition(collectiveTimeout > 0, "collectiveTimeout must be positive, got \(collectiveTimeout)")
        }
    }
    /// What the rank is doing, set by callers and named in timeout and consistency errors, e.g.
    /// `"step 12"` or `"evaluation"`. Must be the same on every rank at each collective when
    /// ``checksConsistency`` is on (it is part of the compared hash).
    public var context: String = ""
    /// Whether every collective is preceded by a check that all ranks run the same one (`--debug`):
    /// see ``checkConsistency(_:bytes:)``. Must be the same on every rank.
    public var checksConsistency = false
    /// Whether a wait on this rank has passed ``collectiveTimeout``: the job is being aborted, and
    /// requests released on the way out no longer wait for their collectives (nor does the
    /// progress thread test them). Atomic: operations released on the progress thread read it.
    public internal(set) var hasGivenUp: Bool {
        get { givenUp.load(ordering: .relaxed) }
        set {
            givenUp.store(newValue, ordering: .relaxed)
            if newValue { progressThread?.pause() }
        }
    }
    private let givenUp = Atomic<Bool>(false)
    /// Bytes sent (ring model), collectives started and seconds waited by this rank so far, and
    /// the progress thread's passes and processor time; see ``CommunicationCounters``.
    public internal(set) var counters: CommunicationCounters {
        get {
            var counters = recordedCounters
            if let progressThread {
                counters.progressThreadPasses = progressThread.passes.load(ordering: .relaxed)
                counters.progressThreadCPUSeconds = progressThread.cpuSeconds
            }
            return counters
        }
        set { recordedCounters = newValue }
    }
    private var recordedCounters = CommunicationCounters()
    /// The communication thread of `--progress-thread` (``startProgressThread()``), if started.
    var progressThread: ProgressThread? = nil
    /// The thread level MPI was initialised with (`.funneled` without MPI).
    let providedThreadLevel: ThreadLevel
    /// The least time between two passes of ``progressIfDue(_:)``, the progress hook that compute
    /// calls between its matrix products (default 1 ms; `nil` turns the hook off). See
    /// ``progressIfDue(_:)``.
    public var progressInterval: Duration? = Communicator.defaultProgressInterval
    /// When ``progressIfDue(_:)`` last ran a pass.
    var lastProgress = ContinuousClock.now

    private let storedHostName: String
    /// The collectives this rank started (counted only while ``checksConsistency`` is on).
    var collectiveSequence = 0
    /// Ring reduce-scatters in flight, advanced by every wait (``poll(_:until:)``).
    var ringsInFlight: [WeakOperation] = []
    /// The tag of the next ring reduce-scatter: rings in flight at once must not match each other's
    /// messages (MPI keeps order only per source and tag), so each ring gets the next one.
    var nextRingTag: Int32 = 0
    /// A duplicate of `MPI_COMM_WORLD` with `MPI_ERRORS_RETURN`; `nil` in the one-rank mode.
    let handle: MPI_Comm?

    nonisolated(unsafe) private static var shared: Result<Communicator, CollectiveError>?

    /// The communicator of all ranks in the job, created on first use and the same instance after.
    ///
    /// The first call makes stdout line-buffered and, under a launcher, initialises MPI; an
    /// initialisation failure is thrown again on every later call. The corresponding C functions
    /// are `MPI_Init_thread`, `MPI_Comm_set_errhandler` and `MPI_Comm_dup`.
    public static func world() throws -> Communicator {
        if let shared { return try shared.get() }
        ProcessRuntime.makeStdoutLineBuffered()
        do {
            let communicator = try ProcessRuntime.isUnderLauncher ? Communicator(initialisingMPI: ()) : Communicator()
            shared = .success(communicator)
        } catch {
            shared = .failure(error)
        }
        return try shared!.get()
    }

    /// The one-rank communicator used without a launcher.
    private init() {
        rank = 0
        size = 1
        storedHostName = ProcessRuntime.localHostName()
        handle = nil
        providedThreadLevel = .funneled
    }

    /// Initialises MPI and wraps a duplicate of `MPI_COMM_WORLD`.
    private init(initialisingMPI: Void) throws(CollectiveError) {
        func failure(_ operation: String, _ code: Int32) -> CollectiveError {
            CollectiveError(
                operation: operation, rank: Int(ProcessRuntime.launcherRank) ?? -1, size: -1,
                errorCode: code, errorClass: mpiErrorClass(code), reason: mpiErrorString(code))
        }
        let required = Self.threadMultipleRequiredBy == nil ? zsft_thread_funneled() : zsft_thread_multiple()
        var provided: Int32 = 0
        var code = MPI_Init_thread(nil, nil, required, &provided)
        guard code == zsft_success() else { throw failure("MPI_Init_thread", code) }
        ProcessRuntime.registerFinaliseAtExit()
        let world = zsft_comm_world()
        code = MPI_Comm_set_errhandler(world, zsft_errors_return())
        guard code == zsft_success() else { throw failure("MPI_Comm_set_errhandler", code) }
        var duplicate: MPI_Comm? = nil
        code = MPI_Comm_dup(world, &duplicate)
        guard code == zsft_success() else { throw failure("MPI_Comm_dup", code) }
        var rank: Int32 = 0
        var size: Int32 = 0
        code = MPI_Comm_rank(duplicate, &rank)
        guard code == zsft_success() else { throw failure("MPI_Comm_rank", code) }
        code = MPI_Comm_size(duplicate, &size)
        guard code == zsft_success() else { throw failure("MPI_Comm_size", code) }
        guard provided >= zsft_thread_funneled() else {
            throw CollectiveError(
                operation: "MPI_Init_thread", rank: Int(rank), size: Int(size),
                reason: "the MPI library provides thread level \(provided), below MPI_THREAD_FUNNELED (\(zsft_thread_funneled()))")
        }
        if let option = Self.threadMultipleRequiredBy, provided < zsft_thread_multiple() {
            throw CollectiveError(
                operation: "MPI_Init_thread", rank: Int(rank), size: Int(size),
                reason: "\(option) needs MPI_THREAD_MULTIPLE (\(zsft_thread_multiple())), but this MPI library provides only "
                    + "thread level \(provided) (Open MPI must be built with thread support; `ompi_info | grep -i thread` shows it); "
                    + "run without \(option)")
        }
        self.providedThreadLevel = provided >= zsft_thread_multiple() ? .multiple : .funneled
        var name = [CChar](repeating: 0, count: Int(zsft_max_processor_name()) + 1)
        var nameLength: Int32 = 0
        code = MPI_Get_processor_name(&name, &nameLength)
        self.storedHostName =
            code == zsft_success()
            ? String(decoding: name.prefix(Int(nameLength)).map { UInt8(bitPattern: $0) }, as: UTF8.self)
            : ProcessRuntime.localHostName()
        self.rank = Int(rank)
        self.size = Int(size)
        self.handle = duplicate
    }

    // MARK: Errors and chunking

    /// Throws a ``CollectiveError`` for a failed MPI call.
    func check(_ code: Int32, _ operation: String, _ details: @autoclosure () -> String) throws(CollectiveError) {
        guard code != zsft_success() else { return }
        throw CollectiveError(
            operation: operation, rank: rank, size: size, errorCode: code, errorClass: mpiErrorClass(code),
            reason: mpiErrorString(code), details: details())
    }

    /// The most elements of `T` per rank in one MPI call that moves `ranksPerCall` such blocks.
    func elementsPerCall<T>(_: T.Type, ranksPerCall: Int) -> Int {
        let bytesPerElement = MemoryLayout<T>.stride * ranksPerCall
        return max(1, min(Int(Int32.max), maximumBytesPerCall / bytesPerElement))
    }

    // MARK: Collectives

    /// Waits until every rank has entered the barrier, through ``poll(_:until:)`` (deadline and
    /// backoff). The corresponding C function is `MPI_Ibarrier`.
    public func barrier() throws {
        guard let handle else { return }
        try checkConsistency("barrier", bytes: 0)
        countTraffic(bytes: 0, phases: 0)
        var requests: [MPI_Request?] = [nil]
        try check(MPI_Ibarrier(handle, &requests[0]), "MPI_Ibarrier", "")
        try waitForRequests(&requests, "MPI_Ibarrier", "")
    }

    /// Copies `buffer` on rank `root` into `buffer` on every other rank.
    ///
    /// Every rank passes a buffer of the same count. The corresponding C function is `MPI_Ibcast`
    /// (one per piece, see ``maximumBytesPerCall``), waited for through ``poll(_:until:)``.
    public func broadcast<T: CollectiveElement>(_ buffer: UnsafeMutableBufferPointer<T>, root: Int) throws {
        precondition((0..<size).contains(root), "broadcast: root \(root) is not a rank of a \(size)-rank communicator")
        let type = T.checkedMPIDatatype
        guard let handle, buffer.count > 0, let base = buffer.baseAddress else { return }
        let count = buffer.count
        try checkConsistency("broadcast from rank \(root)", bytes: count * MemoryLayout<T>.stride)
        countTraffic(bytes: count * MemoryLayout<T>.stride, phases: 1)
        var requests: [MPI_Request?] = []  // a failure to start a piece aborts the job: nothing to clean up
        for piece in Pieces(count: count, limit: elementsPerCall(T.self, ranksPerCall: 1)) {
            var request: MPI_Request? = nil
            try check(
                MPI_Ibcast(base + piece.offset, Int32(piece.count), type, Int32(root), handle, &request), "MPI_Ibcast",
                "\(count) × \(T.collectiveElementKind), root \(root)\(piece.describe(total: count))")
            requests.append(request)
        }
        try waitForRequests(&requests, "MPI_Ibcast", "\(count) × \(T.collectiveElementKind), root \(root)")
    }

    /// Replaces every element of `buffer` by its reduction over all ranks, in place.
    ///
    /// `buffer[i] ← op over ranks r of buffer_r[i]`. Every rank passes the same count. The
    /// corresponding C function is `MPI_Iallreduce` with `MPI_IN_PLACE`, waited for through
    /// ``poll(_:until:)``; above 4 KiB it is the blocking `MPI_Allreduce` under a watchdog thread
    /// that ends the process after ``collectiveTimeout`` (see ``largestPolledAllReduceBytes``).
    public func allReduce<T: CollectiveElement>(_ buffer: UnsafeMutableBufferPointer<T>, _ op: ReductionOperation) throws {
        let type = T.checkedMPIDatatype
        guard let handle, buffer.count > 0, let base = buffer.baseAddress else { return }
        let count = buffer.count, bytes = count * MemoryLayout<T>.stride
        try checkConsistency("allReduce \(op)", bytes: bytes)
        countTraffic(bytes: bytes, phases: 2)
        let details = "\(count) × \(T.collectiveElementKind), \(op)"
        if bytes <= Self.largestPolledAllReduceBytes {
            var requests: [MPI_Request?] = []
            for piece in Pieces(count: count, limit: elementsPerCall(T.self, ranksPerCall: 1)) {
                var request: MPI_Request? = nil
                try check(
                    MPI_Iallreduce(zsft_in_place(), base + piece.offset, Int32(piece.count), type, op.mpiOperation, handle, &request),
                    "MPI_Iallreduce", details + piece.describe(total: count))
                requests.append(request)
            }
            try waitForRequests(&requests, "MPI_Iallreduce", details)
            return
        }
        let started = ContinuousClock.now
        defer { countWait(since: started) }
        for piece in Pieces(count: count, limit: elementsPerCall(T.self, ranksPerCall: 1)) {
            let pieceDetails = details + piece.describe(total: count)
            try BlockingCallGuard.run(
                timeout: collectiveTimeout,
                message: "zero-sft: rank \(rank)/\(size) (\(hostName)): "
                    + timeoutError("MPI_Allreduce", details: pieceDetails, waited: collectiveTimeout).description
            ) { () throws(CollectiveError) in
                try check(
                    MPI_Allreduce(zsft_in_place(), base + piece.offset, Int32(piece.count), type, op.mpiOperation, handle),
                    "MPI_Allreduce", pieceDetails)
            }
        }
    }

    /// All-reduces up to this size go through `MPI_Iallreduce` and ``poll(_:until:)`` (deadline and
    /// backoff); larger ones call the blocking `MPI_Allreduce` under a watchdog thread, because
    /// libnbc's `MPI_Iallreduce` allocates a temporary as large as the buffer, where coll/tuned's
    /// blocking algorithms need half or 2/N of it (the memory planner's model). In training, the
    /// small ones are the loss, token counts and norms; the large ones stage 0's gradient all-reduce.
    static let largestPolledAllReduceBytes = 4096

    /// The reduction of `value` over all ranks.
    public func allReduce<T: CollectiveElement>(_ value: T, _ op: ReductionOperation) throws -> T {
        var result = value
        try withUnsafeMutablePointer(to: &result) { pointer in
            try allReduce(UnsafeMutableBufferPointer(start: pointer, count: 1), op)
        }
        return result
    }

    /// The element-wise reduction of `values` over all ranks (every rank passes the same count).
    public func allReduce<T: CollectiveElement>(_ values: [T], _ op: ReductionOperation) throws -> [T] {
        var result = values
        try result.withUnsafeMutableBufferPointer { buffer in try allReduce(buffer, op) }
        return result
    }

    /// Aborts every rank of the job with `exitCode` (`MPI_Abort` on `MPI_COMM_WORLD`), after
    /// flushing stdout and stderr. Without MPI it exits the process.
    public func abort(exitCode: Int32) -> Never {
        ProcessRuntime.flushStandardStreams()
        if handle != nil, ProcessRuntime.mpiIsActive {
            MPI_Abort(zsft_comm_world(), exitCode)
        }
        exit(exitCode)
    }

    /// Finalises MPI (`MPI_Finalize`); the communicator must not be used afterwards.
    func finalise() throws(CollectiveError) {
        guard handle != nil else { return }
        progressThread?.stop()
        try check(ProcessRuntime.finaliseIfNeeded(), "MPI_Finalize", "")
    }
}

/// The MPI thread levels zero-sft uses.
enum ThreadLevel {
    /// `MPI_THREAD_FUNNELED`: every MPI call from the thread that initialised MPI.
    case funneled
    /// `MPI_THREAD_MULTIPLE`: MPI calls from any thread, at the same time (`--progress-thread`).
    case multiple
}

/// Consecutive pieces `[offset, offset + count)` of at most `limit` elements covering `0 ..< count`.
struct Pieces: Sequence, IteratorProtocol {
    struct Piece: Equatable {
        var offset: Int
        var count: Int
        var index: Int
        var pieceCount: Int

        /// ", piece 2 of 3 at element 100" for chunked calls, "" otherwise.
        func describe(total: Int) -> String {
            pieceCount == 1 ? "" : ", piece \(index + 1) of \(pieceCount) at element \(offset)"
        }
    }

    let count: Int
    let limit: Int
    private var position = 0

    init(count: Int, limit: Int) {
        precondition(count >= 0 && limit >= 1)
        self.count = count
        self.limit = limit
    }

    var pieceCount: Int { count == 0 ? 0 : (count + limit - 1) / limit }

    mutating func next() -> Piece? {
        guard position < count else { return nil }
        let piece = Piece(
            offset: position, count: Swift.min(limit, count - position), index: position / limit, pieceCount: pieceCount)
        position += piece.count
        return piece
    }
}
