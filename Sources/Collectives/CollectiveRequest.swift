internal import CMPI

/// A non-blocking collective in flight, returned by `startAllGather` and `startReduceScatter`.
///
/// Until ``wait()`` returns (or ``test()`` returns `true`), MPI may read the input and write the
/// output buffers at any time: keep them allocated and do not touch them. Progress happens inside
/// MPI calls, so a rank that computes while a request is in flight should call ``test()`` now and
/// then or simply ``wait()`` when it needs the result.
///
/// With a progress thread (``Communicator/startProgressThread()``) that thread tests the request as
/// well; its state is touched only under its own lock, and a failure met by the thread is thrown by
/// the owner's next ``test()`` or ``wait()``.
///
/// Dropping a request without waiting is a programmer error. To keep memory safe and the ranks in
/// step anyway, `deinit` **waits** for the request to complete and prints a warning naming the
/// operation on stderr (it does not trap, so an error thrown between start and wait still reaches
/// `Job.run` with its own message).
public final class CollectiveRequest: ThreadDrivenOperation {
    /// Guards the state below: the owner's thread and the progress thread both test the request.
    private let lock = OperationLock()
    /// The MPI requests of the (possibly chunked) operation; empty once complete.
    private var requests: [MPI_Request?]
    /// Derived datatypes used by the requests, freed on completion.
    private var datatypes: [MPI_Datatype?]
    private var completed: Bool
    /// The error that ended the operation, thrown again by every later ``test()``.
    private var failure: CollectiveError? = nil
    private let operation: String
    private let details: String
    private let rank: Int
    private let size: Int
    /// The communicator whose deadline, backoff and context ``wait()`` uses.
    private let communicator: Communicator
    /// The communicator's timeout when the request started (for a `deinit` on the progress thread).
    private let timeout: Double

    /// Whether the operation has completed (successfully or not: then ``test()`` throws the error).
    public var isComplete: Bool { lock.withLock { completed } }

    init(operation: String, details: String, communicator: Communicator, pending: PendingCalls) {
        self.operation = operation
        self.details = details
        self.communicator = communicator
        self.rank = communicator.rank
        self.size = communicator.size
        self.timeout = communicator.collectiveTimeout
        self.requests = pending.requests
        self.datatypes = pending.datatypes
        self.completed = pending.requests.isEmpty
        if completed { freeDatatypes() } else { communicator.driveInBackground(self) }
    }

    /// Blocks until the operation has completed on this rank. Calling it again returns at once.
    ///
    /// Polls ``test()`` through the communicator's ``Communicator/poll(_:until:)``: spinning
    /// briefly, then backing off to sleeps of up to 1 ms, and throwing a ``CollectiveError`` that
    /// names the operation, the communicator's context and this rank after
    /// ``Communicator/collectiveTimeout`` seconds. The corresponding C function is `MPI_Testall`.
    public func wait() throws {
        try communicator.wait(operation, details) { () throws(CollectiveError) -> Bool in try test() }
    }

    /// Whether the operation has completed, without blocking (and drives its progress).
    ///
    /// Returns `true` on every call after completion; throws the operation's error, also one met
    /// earlier by the progress thread. The corresponding C function is `MPI_Testall`.
    public func test() throws(CollectiveError) -> Bool {
        try lock.withLock { () throws(CollectiveError) -> Bool in
            if let failure { throw failure }
            guard !completed else { return true }
            var statuses = [MPI_Status](repeating: MPI_Status(), count: requests.count)
            var flag: Int32 = 0
            let code = MPI_Testall(Int32(requests.count), &requests, &flag, &statuses)
            if code != zsft_success() {
                complete()
                let error = CollectiveError(completing: operation, code: code, statuses: statuses, rank: rank, size: size, details: details)
                failure = error
                throw error
            }
            if flag != 0 { complete() }
            return completed
        }
    }

    /// ``test()``, for the progress thread.
    func progress() throws(CollectiveError) -> Bool { try test() }

    /// 1 once complete: the progress thread's sign that the request moved.
    var progressMark: Int { isComplete ? 1 : 0 }

    deinit {
        // After a collective timeout the job is being aborted: waiting again would only delay it.
        guard !completed, !communicator.hasGivenUp else { return }
        ProcessRuntime.writeToStandardError(
            "zero-sft: warning: rank \(rank): \(operation) (\(details)) was released without wait(); waiting for it now\n")
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

    private func complete() {
        completed = true
        requests.removeAll()
        freeDatatypes()
    }

    private func freeDatatypes() {
        for index in datatypes.indices { MPI_Type_free(&datatypes[index]) }
        datatypes.removeAll()
    }
}

/// The MPI requests and derived datatypes one collective has started.
struct PendingCalls {
    var requests: [MPI_Request?] = []
    var datatypes: [MPI_Datatype?] = []

    /// Frees the datatypes of blocking calls (which have all completed).
    mutating func freeDatatypes() {
        for index in datatypes.indices { MPI_Type_free(&datatypes[index]) }
        datatypes.removeAll()
    }
}
