import Synchronization

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// A recursive `pthread_mutex_t`: the lock of one operation in flight (``RingReduceScatter``,
/// ``CollectiveRequest``) that the progress thread and the rank's own thread may both test.
///
/// Recursive because an operation released by its last owner waits for itself in `deinit`, and
/// that wait tests it again. The corresponding C functions are `pthread_mutex_lock` and
/// `pthread_mutex_unlock`.
final class OperationLock: @unchecked Sendable {
    private let mutex: UnsafeMutablePointer<pthread_mutex_t>

    init() {
        mutex = .allocate(capacity: 1)
        var attributes = pthread_mutexattr_t()
        pthread_mutexattr_init(&attributes)
        pthread_mutexattr_settype(&attributes, Int32(PTHREAD_MUTEX_RECURSIVE))
        pthread_mutex_init(mutex, &attributes)
        pthread_mutexattr_destroy(&attributes)
    }

    deinit {
        pthread_mutex_destroy(mutex)
        mutex.deallocate()
    }

    /// Runs `body` holding the lock.
    func withLock<Result, Failure: Error>(_ body: () throws(Failure) -> Result) throws(Failure) -> Result {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        return try body()
    }
}

/// Something in flight that the progress thread can drive: ``RingReduceScatter``, ``CollectiveRequest``.
protocol ThreadDrivenOperation: AnyObject {
    /// Advances as far as the messages that have arrived allow (under the operation's own lock);
    /// whether it is complete. A failure is kept by the operation and thrown to its owner by its
    /// next `test()` or `wait()`.
    func progress() throws(CollectiveError) -> Bool
    /// A number that changes whenever the operation moves (a ring's step, a completion): the
    /// thread's backoff starts over when any operation moved.
    var progressMark: Int { get }
}

/// The communication thread of `--progress-thread`: one per rank, driving the collectives in
/// flight while the rank's own thread computes, with no call from the model.
///
/// Open MPI moves a non-blocking collective only inside MPI calls, and a ring reduce-scatter only
/// when its rank tests it. This thread tests every registered operation (each stage-3 all-gather's
/// `MPI_Testall`, each ring's ``RingReduceScatter/test()``, which adds each received block into
/// the ring's own buffer and posts the next step) and then sleeps: 50 µs after a pass in which
/// something moved (a ring step, a completion), doubling to 1 ms while nothing moves, and, once
/// nothing has moved for 100 ms (a stalled or dead peer), up to 10 ms, so a rank whose peer is
/// stopped uses a few per cent of a core (as ``Backoff``). With nothing in flight it blocks on a
/// condition variable until the next operation is registered.
///
/// **Thread level.** Both threads call MPI: this one its tests, the rank's thread everything else
/// (starts, waits, blocking collectives), possibly at the same moment, so MPI is initialised with
/// `MPI_THREAD_MULTIPLE` (``Communicator/requireThreadMultiple(for:)``; an MPI library that does
/// not provide it is an error naming the option). **Data.** Each operation's own state (its MPI
/// requests, a ring's step) is touched only under its ``OperationLock``, by whichever thread tests
/// it; the buffers it works in are the operation's alone while it is in flight (the caller must not
/// touch them until it completes, as without the thread), and the owner reads its result only after
/// it has seen the completion under the same lock, which orders the thread's writes (the ring's
/// additions, MPI's receives) before the owner's reads. The thread folds nothing into a rank's
/// state: the gradient reducer still folds completed rings into the shard on the rank's thread,
/// oldest first, so results are bitwise those without the thread.
final class ProgressThread: @unchecked Sendable {
    private let mutex: UnsafeMutablePointer<pthread_mutex_t>
    private let condition: UnsafeMutablePointer<pthread_cond_t>
    /// Under `mutex`: the operations registered and not yet seen complete (weak: the owner decides
    /// their lifetime), and whether the thread should end.
    private var operations: [WeakDriven] = []
    private var stopping = false
    /// Whether the communicator gave up after a timeout: the thread stops testing.
    private let paused = Atomic<Bool>(false)
    private var thread = pthread_t()
    private var clock = clockid_t()
    private var stoppedCPUSeconds: Double? = nil
    /// Passes over the registered operations so far.
    let passes = Atomic<Int>(0)

    /// The thread currently running (set while it runs), so that `MPI_Finalize` stops it first
    /// also when the process exits through the `atexit` handler instead of `Job.run`.
    nonisolated(unsafe) static var running: ProgressThread? = nil

    private struct WeakDriven {
        weak var operation: (any ThreadDrivenOperation)?
    }

    /// Starts the thread. The corresponding C function is `pthread_create`.
    init() throws(CollectiveError) {
        mutex = .allocate(capacity: 1)
        condition = .allocate(capacity: 1)
        pthread_mutex_init(mutex, nil)
        pthread_cond_init(condition, nil)
        let unmanaged = Unmanaged.passRetained(self)
        let code = pthread_create(&thread, nil, { argument in
            let thread = Unmanaged<ProgressThread>.fromOpaque(argument!).takeRetainedValue()
            thread.run()
            return nil
        }, unmanaged.toOpaque())
        guard code == 0 else {
            unmanaged.release()
            throw CollectiveError(operation: "pthread_create", rank: -1, size: -1,
                                  reason: "could not start the progress thread (--progress-thread): error \(code)")
        }
        pthread_getcpuclockid(thread, &clock)
        Self.running = self
    }

    deinit {
        pthread_cond_destroy(condition)
        pthread_mutex_destroy(mutex)
        condition.deallocate()
        mutex.deallocate()
    }

    /// Whether the calling thread is a progress thread.
    static var isCurrent: Bool { currentIsProgressThread }

    /// Hands `operation` to the thread until it completes.
    func register(_ operation: any ThreadDrivenOperation) {
        pthread_mutex_lock(mutex)
        operations.append(WeakDriven(operation: operation))
        pthread_cond_signal(condition)
        pthread_mutex_unlock(mutex)
    }

    /// Stops testing (after a collective timeout the job is being aborted).
    func pause() { paused.store(true, ordering: .relaxed) }

    /// The thread's processor time so far (`pthread_getcpuclockid`), in seconds.
    var cpuSeconds: Double {
        if let stoppedCPUSeconds { return stoppedCPUSeconds }
        var time = timespec()
        guard clock_gettime(clock, &time) == 0 else { return 0 }
        return Double(time.tv_sec) + Double(time.tv_nsec) * 1e-9
    }

    /// Ends the thread and waits for it (before `MPI_Finalize`). The corresponding C function is
    /// `pthread_join`.
    func stop() {
        let cpu = cpuSeconds
        pthread_mutex_lock(mutex)
        let first = !stopping
        stopping = true
        pthread_cond_signal(condition)
        pthread_mutex_unlock(mutex)
        guard first else { return }
        pthread_join(thread, nil)
        stoppedCPUSeconds = max(cpu, stoppedCPUSeconds ?? 0)
        if Self.running === self { Self.running = nil }
    }

    /// The shortest, longest and patient longest sleep between passes, in nanoseconds.
    static let firstSleepNanoseconds = 50_000
    static let longestSleepNanoseconds = 1_000_000
    static let longestPatientSleepNanoseconds = 10_000_000
    static let patientAfterNanoseconds = 100_000_000

    private func run() {
        currentIsProgressThread = true
        var sleep = Self.firstSleepNanoseconds
        var lastMoved = Self.monotonicNanoseconds()
        while true {
            pthread_mutex_lock(mutex)
            operations.removeAll { $0.operation == nil }
            while !stopping && (operations.isEmpty || paused.load(ordering: .relaxed)) {
                pthread_cond_wait(condition, mutex)
                operations.removeAll { $0.operation == nil }
            }
            if stopping {
                pthread_mutex_unlock(mutex)
                return
            }
            var current = operations.compactMap(\.operation)
            pthread_mutex_unlock(mutex)

            var moved = false
            var completed: [ObjectIdentifier] = []
            for operation in current {
                let before = operation.progressMark
                // A failure stays with the operation: its owner's next test or wait throws it.
                let done = (try? operation.progress()) ?? true
                if done { completed.append(ObjectIdentifier(operation)) }
                if done || operation.progressMark != before { moved = true }
            }
            passes.add(1, ordering: .relaxed)
            // Drop the references outside the lock: if the owner released an operation meanwhile,
            // its deinit runs here (see ``isCurrent``).
            current.removeAll()

            let now = Self.monotonicNanoseconds()
            if moved {
                sleep = Self.firstSleepNanoseconds
                lastMoved = now
            }
            pthread_mutex_lock(mutex)
            if !completed.isEmpty {
                operations.removeAll { entry in
                    guard let operation = entry.operation else { return true }
                    return completed.contains(ObjectIdentifier(operation))
                }
            }
            if !stopping && !operations.isEmpty {
                // Sleep, or less if an operation is registered meanwhile.
                var deadline = timespec()
                clock_gettime(CLOCK_REALTIME, &deadline)
                let end = deadline.tv_nsec + sleep
                deadline.tv_sec += end / 1_000_000_000
                deadline.tv_nsec = end % 1_000_000_000
                let count = operations.count
                while !stopping && operations.count == count {
                    if pthread_cond_timedwait(condition, mutex, &deadline) == ETIMEDOUT { break }
                }
            }
            pthread_mutex_unlock(mutex)
            let longest = now - lastMoved < Self.patientAfterNanoseconds
                ? Self.longestSleepNanoseconds : Self.longestPatientSleepNanoseconds
            sleep = min(2 * sleep, longest)
        }
    }

    static func monotonicNanoseconds() -> Int {
        var now = timespec()
        clock_gettime(CLOCK_MONOTONIC, &now)
        return now.tv_sec * 1_000_000_000 + now.tv_nsec
    }
}

/// The thread-local key that marks the progress thread (`pthread_key_create`).
private let currentIsProgressThreadKey: pthread_key_t = {
    var key = pthread_key_t()
    pthread_key_create(&key, nil)
    return key
}()

/// Whether the calling thread is the progress thread.
private var currentIsProgressThread: Bool {
    get { pthread_getspecific(currentIsProgressThreadKey) != nil }
    set { pthread_setspecific(currentIsProgressThreadKey, newValue ? UnsafeRawPointer(bitPattern: 1) : nil) }
}

extension Communicator {
    /// The thread level `MPI_Init_thread` must provide, and the option that needs it: set by
    /// ``requireThreadMultiple(for:)`` before ``world()``.
    nonisolated(unsafe) static var threadMultipleRequiredBy: String? = nil

    /// Makes ``world()`` initialise MPI with `MPI_THREAD_MULTIPLE` and fail, naming `option`, if
    /// the library does not provide it. Call it before ``world()`` (``Job/run(_:)``), once per
    /// process: `--progress-thread` does, because its thread and the rank's thread both call MPI.
    public static func requireThreadMultiple(for option: String) {
        threadMultipleRequiredBy = option
    }

    /// Whether a progress thread drives this rank's collectives in flight (``startProgressThread()``).
    public var hasProgressThread: Bool { progressThread != nil }

    /// Starts the rank's communication thread (`--progress-thread`, see ``ProgressThread``): from
    /// now on every ring reduce-scatter and non-blocking all-gather or reduce-scatter is also driven
    /// by it, while this thread computes. Needs MPI initialised with `MPI_THREAD_MULTIPLE`
    /// (``requireThreadMultiple(for:)`` before ``world()``); throws a ``CollectiveError`` otherwise.
    /// Without MPI (one rank, no launcher) nothing is ever in flight and no thread is started.
    public func startProgressThread() throws(CollectiveError) {
        guard handle != nil, progressThread == nil else { return }
        guard providedThreadLevel == .multiple else {
            throw CollectiveError(
                operation: "--progress-thread", rank: rank, size: size,
                reason: "the progress thread needs MPI initialised with MPI_THREAD_MULTIPLE (Communicator.requireThreadMultiple before world())")
        }
        progressThread = try ProgressThread()
    }

    /// Hands an operation just started to the progress thread, if there is one.
    func driveInBackground(_ operation: any ThreadDrivenOperation) {
        progressThread?.register(operation)
    }
}

/// Tests `done` until it returns `true` or `timeout` seconds pass, sleeping 1 ms between tests; the
/// error or timeout as text, `nil` on completion. For an operation released on the progress thread,
/// which must not use the communicator's waits.
func drain(_ done: () throws(CollectiveError) -> Bool, timeout: Double) -> String? {
    let deadline = Deadline(seconds: timeout)
    while true {
        do {
            if try done() { return nil }
        } catch {
            return error.description
        }
        if deadline.hasPassed { return "gave up after \(formatSeconds(timeout)) s (--collective-timeout)" }
        usleep(1_000)
    }
}
