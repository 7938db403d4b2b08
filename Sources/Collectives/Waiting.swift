internal import CMPI
import Synchronization

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// How a waiting rank paces its polls: spin briefly, then sleep with growing pauses.
///
/// The first ``spinNanoseconds`` of a wait poll back to back (a collective that is about to finish
/// costs no sleep); after that each ``pause()`` sleeps, starting at ``firstSleepNanoseconds`` and
/// doubling up to ``longestSleepNanoseconds`` (1 ms). A wait that has lasted ``patientAfterNanoseconds``
/// (100 ms) is a slow, stalled or dead peer, not a collective about to finish: its sleeps keep
/// doubling up to ``longestPatientSleepNanoseconds`` (10 ms, at most 10% of what it has already
/// waited). A rank that waits for a slow or stalled rank therefore uses a few per cent of a core
/// instead of all of it, which on an oversubscribed host is the core the slow rank needs. (Each poll
/// is an `MPI_Test*`, which runs Open MPI's whole progress engine: on a loaded 2-core host a poll
/// every millisecond measured 27% of a core.)
public struct Backoff: Sendable {
    /// How long a wait polls without sleeping.
    public static let spinNanoseconds = 50_000
    /// The first sleep after the spin.
    public static let firstSleepNanoseconds = 10_000
    /// The longest sleep between two polls during the first ``patientAfterNanoseconds`` of a wait.
    public static let longestSleepNanoseconds = 1_000_000
    /// How long a wait lasts before its sleeps may grow past ``longestSleepNanoseconds``.
    public static let patientAfterNanoseconds = 100_000_000
    /// The longest sleep between two polls of a long wait.
    public static let longestPatientSleepNanoseconds = 10_000_000

    private var started: ContinuousClock.Instant? = nil
    private var sleepNanoseconds = Backoff.firstSleepNanoseconds

    public init() {}

    /// Returns at once during the spin, then sleeps for the next pause (`nanosleep`).
    public mutating func pause() {
        let now = ContinuousClock.now
        guard let started else {
            self.started = now
            return
        }
        let waited = now - started
        if waited < .nanoseconds(Self.spinNanoseconds) { return }
        var request = timespec(tv_sec: 0, tv_nsec: sleepNanoseconds)
        _ = nanosleep(&request, nil)
        let longest = waited < .nanoseconds(Self.patientAfterNanoseconds)
            ? Self.longestSleepNanoseconds : Self.longestPatientSleepNanoseconds
        sleepNanoseconds = min(2 * sleepNanoseconds, longest)
    }
}

/// Something in flight that moves only when its rank calls it: a ring reduce-scatter.
protocol ProgressingOperation: AnyObject {
    /// Advances as far as the messages that have arrived allow; whether it is complete.
    func progress() throws(CollectiveError) -> Bool
}

/// A weak reference to an operation in flight (the owner decides its lifetime).
struct WeakOperation {
    weak var operation: (any ProgressingOperation)?
}

extension Communicator {
    /// Polls `done` until it returns `true`: spinning briefly, then backing off (``Backoff``), and
    /// advancing every ring reduce-scatter in flight on this communicator between polls.
    ///
    /// Throws a ``CollectiveError`` naming `what`, ``context``, the rank and its host when `done`
    /// has not returned `true` within ``collectiveTimeout`` seconds: some rank is stalled, dead or
    /// far behind, and ``Job/run(_:)`` then aborts the whole job with that message. Every wait
    /// for a collective in zero-sft goes through here (`CollectiveRequest.wait()`, the ring's
    /// `wait()`, the blocking collectives and `ZeroEngine`'s polling loop). `what` names the
    /// collective being waited for, e.g. `"all-gather of unit 3 (layers.2)"`.
    public func poll(_ what: @autoclosure () -> String, until done: () throws -> Bool) throws {
        if try done() { return }
        var deadline = Deadline(seconds: collectiveTimeout)
        defer { countWait(since: deadline.start) }
        var backoff = Backoff()
        while true {
            try progressRings()
            if try done() { return }
            deadline.tick()
            if deadline.hasPassed || hasGivenUp {
                hasGivenUp = true
                throw timeoutError(what(), details: "", waited: deadline.elapsedSeconds, notRunning: deadline.longestGapSeconds)
            }
            backoff.pause()
        }
    }

    /// ``poll(_:until:)`` for the typed-throwing requests of this module.
    func wait(
        _ operation: String, _ details: @autoclosure () -> String, until done: () throws(CollectiveError) -> Bool
    ) throws(CollectiveError) {
        if try done() { return }
        var deadline = Deadline(seconds: collectiveTimeout)
        defer { countWait(since: deadline.start) }
        var backoff = Backoff()
        while true {
            try progressRings()
            if try done() { return }
            deadline.tick()
            if deadline.hasPassed || hasGivenUp {
                hasGivenUp = true
                throw timeoutError(operation, details: details(), waited: deadline.elapsedSeconds, notRunning: deadline.longestGapSeconds)
            }
            backoff.pause()
        }
    }

    /// Waits for MPI requests started by a blocking collective of this module, with the deadline.
    func waitForRequests(_ requests: inout [MPI_Request?], _ operation: String, _ details: @autoclosure () -> String)
        throws(CollectiveError)
    {
        guard !requests.isEmpty else { return }
        var statuses = [MPI_Status](repeating: MPI_Status(), count: requests.count)
        try wait(operation, details()) { () throws(CollectiveError) -> Bool in
            var flag: Int32 = 0
            let code = MPI_Testall(Int32(requests.count), &requests, &flag, &statuses)
            if code != zsft_success() {
                throw CollectiveError(completing: operation, code: code, statuses: statuses, rank: rank, size: size, details: details())
            }
            return flag != 0
        }
    }

    /// The error of a wait that passed ``collectiveTimeout``. `notRunning`: the longest stretch of the wait
    /// during which this rank itself did not poll (``Deadline/longestGapSeconds``); when it is at least 1 s
    /// and a tenth of the wait, this rank was stopped (SIGSTOP), swapped out or starved, and the message
    /// says the stall may be its own — the stopped rank of a job, continued by `mpirun`'s kill sequence,
    /// gave up at once and blamed "another rank" as the rank that waited for it did. With 2 ranks the other
    /// rank is named.
    func timeoutError(_ operation: String, details: String, waited: Double, notRunning: Double = 0) -> CollectiveError {
        let during = context.isEmpty ? "" : " during \(context)"
        let cause = notRunning >= 1 && notRunning >= waited / 10
            ? "this rank itself did not run for \(formatSeconds(notRunning)) s of the wait (stopped, e.g. by SIGSTOP, swapped out or "
                + "starved of CPU): the stall may be its own"
            : size == 2 ? "rank \(1 - rank), the other rank, is stalled, dead or far behind"
            : "another rank is stalled, dead or far behind"
        return CollectiveError(
            operation: operation, rank: rank, size: size,
            reason: "rank \(rank) on \(hostName) gave up after waiting \(formatSeconds(waited)) s\(during) "
                + "(--collective-timeout \(formatSeconds(collectiveTimeout))): \(cause)",
            details: details)
    }

    /// Advances every ring reduce-scatter in flight and forgets the completed and released ones.
    func progressRings() throws(CollectiveError) {
        guard !ringsInFlight.isEmpty else { return }
        var index = 0
        while index < ringsInFlight.count {
            if let ring = ringsInFlight[index].operation, try !ring.progress() {
                index += 1
            } else {
                ringsInFlight.remove(at: index)
            }
        }
    }
}

/// A collective timeout's clock.
struct Deadline {
    let start = ContinuousClock.now
    let limit: Duration
    /// When the waiting loop last came round (``tick()``), and the longest time between two rounds: a
    /// round takes one test and a sleep of at most 10 ms, so a long gap is time this process did not run.
    private var lastTick: ContinuousClock.Instant
    private var longestGap = Duration.zero

    init(seconds: Double) {
        limit = seconds.isFinite ? .nanoseconds(Int64(min(seconds, 1e9) * 1e9)) : .seconds(Int64.max / 4)
        lastTick = start
    }

    /// Notes one round of the waiting loop.
    mutating func tick() {
        let now = ContinuousClock.now
        longestGap = max(longestGap, now - lastTick)
        lastTick = now
    }

    /// The longest time between two rounds of the waiting loop, in seconds.
    var longestGapSeconds: Double { longestGap.inSeconds }

    var hasPassed: Bool { ContinuousClock.now - start > limit }
    var elapsedSeconds: Double {
        (ContinuousClock.now - start).inSeconds
    }
}

/// "5", "0.5", "600": seconds without trailing zeros.
func formatSeconds(_ seconds: Double) -> String {
    if !seconds.isFinite { return "∞" }
    let rounded = (seconds * 10).rounded() / 10
    return rounded == rounded.rounded() ? String(Int(rounded)) : String(rounded)
}

// MARK: - The guard of blocking MPI calls

/// A thread that ends the process when a blocking MPI call outlives the collective timeout.
///
/// Large all-reduces stay blocking (`MPI_Allreduce`: Open MPI's coll/tuned algorithms need half a
/// buffer of temporaries or less, libnbc's `MPI_Iallreduce` a whole one), and a blocking MPI call
/// cannot time out by itself. Before such a call the rank arms this guard with the message it would
/// throw; a thread that wakes every 100 ms writes the message and exits the process with status 1
/// if the call has not returned by the deadline, and `mpirun` then kills the other ranks (a rank
/// that exits without `MPI_Finalize` ends the job). The thread calls no MPI function, so
/// `MPI_THREAD_FUNNELED` holds.
enum BlockingCallGuard {
    /// The deadline of the armed call in `CLOCK_MONOTONIC` nanoseconds; 0 when nothing is armed.
    private static let deadline = Atomic<Int>(0)
    /// The message to print when the deadline passes.
    private static let message = Mutex<[UInt8]>([])
    private static let threadStarted = Atomic<Bool>(false)

    /// Runs `body` (one blocking MPI call) under the guard.
    static func run<Result>(
        timeout seconds: Double, message text: @autoclosure () -> String, _ body: () throws(CollectiveError) -> Result
    ) throws(CollectiveError) -> Result {
        guard seconds.isFinite else { return try body() }
        startThreadOnce()
        message.withLock { $0 = Array(("\n" + text() + "\n").utf8) }
        deadline.store(monotonicNanoseconds() + Int(min(seconds, 1e9) * 1e9), ordering: .releasing)
        defer { deadline.store(0, ordering: .releasing) }
        return try body()
    }

    private static func startThreadOnce() {
        guard threadStarted.compareExchange(expected: false, desired: true, ordering: .acquiringAndReleasing).exchanged
        else { return }
        var handle = pthread_t()
        if pthread_create(&handle, nil, watch, nil) == 0 { pthread_detach(handle) }
    }

    /// The guard thread: checks the armed deadline every 100 ms.
    private static let watch: @convention(c) (UnsafeMutableRawPointer?) -> UnsafeMutableRawPointer? = { _ in
        while true {
            usleep(100_000)
            let armed = deadline.load(ordering: .acquiring)
            guard armed != 0, monotonicNanoseconds() > armed else { continue }
            let bytes = message.withLock { $0 }
            fflush(nil)
            bytes.withUnsafeBytes { _ = write(2, $0.baseAddress, $0.count) }
            _exit(1)
        }
    }

    private static func monotonicNanoseconds() -> Int {
        var now = timespec()
        clock_gettime(CLOCK_MONOTONIC, &now)
        return now.tv_sec * 1_000_000_000 + now.tv_nsec
    }
}

// MARK: - The consistency check

extension Communicator {
    /// With ``checksConsistency``: checks, before a collective, that every rank is about to run the
    /// same one. The ranks gather a 64-bit hash (FNV-1a) of `(operation, sequence number, byte
    /// count, context)` with a short description, and all throw a ``CollectiveError`` naming the
    /// first rank whose hash differs from rank 0's and what each of the two calls. Costs one
    /// 128-byte `MPI_Iallgather` per collective.
    func checkConsistency(_ operation: String, bytes: Int) throws(CollectiveError) {
        guard checksConsistency, let handle else { return }
        collectiveSequence += 1
        let text = "\(operation) of \(bytes) bytes, collective #\(collectiveSequence)" + (context.isEmpty ? "" : ", \(context)")
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in text.utf8 { hash = (hash ^ UInt64(byte)) &* 0x0000_0100_0000_01b3 }
        let width = 128, textWidth = width - 8
        var record = [UInt8](repeating: 0, count: width)
        withUnsafeBytes(of: hash.littleEndian) { for i in 0..<8 { record[i] = $0[i] } }
        for (i, byte) in text.utf8.prefix(textWidth).enumerated() { record[8 + i] = byte }
        // Non-blocking: both buffers must stay put until the request completes.
        let send = UnsafeMutableBufferPointer<UInt8>.allocate(capacity: width)
        let receive = UnsafeMutableBufferPointer<UInt8>.allocate(capacity: width * size)
        defer {
            send.deallocate()
            receive.deallocate()
        }
        _ = send.initialize(from: record)
        receive.initialize(repeating: 0)
        var requests: [MPI_Request?] = [nil]
        try check(
            MPI_Iallgather(send.baseAddress, Int32(width), zsft_uint8(), receive.baseAddress, Int32(width), zsft_uint8(),
                           handle, &requests[0]),
            "MPI_Iallgather", "collective consistency check, \(width) bytes per rank")
        try waitForRequests(&requests, "MPI_Iallgather", "collective consistency check before \(text)")
        let records = Array(receive)
        func hashOf(_ rank: Int) -> UInt64 {
            records[(rank * width)..<(rank * width + 8)].reversed().reduce(0) { $0 << 8 | UInt64($1) }
        }
        func textOf(_ rank: Int) -> String {
            String(decoding: records[(rank * width + 8)..<((rank + 1) * width)].prefix { $0 != 0 }, as: UTF8.self)
        }
        guard let differing = (1..<size).first(where: { hashOf($0) != hashOf(0) }) else { return }
        throw CollectiveError(
            operation: "collective consistency check (--debug)", rank: rank, size: size,
            reason: "rank \(differing) is the first rank that differs from rank 0: rank \(differing) calls "
                + "\(textOf(differing)); rank 0 calls \(textOf(0))")
    }
}
