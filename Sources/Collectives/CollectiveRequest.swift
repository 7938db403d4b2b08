internal import CMPI

/// A non-blocking collective in flight, returned by `startAllGather` and `startReduceScatter`.
///
/// Until ``wait()`` returns (or ``test()`` returns `true`), MPI may read the input and write the
/// output buffers at any time: keep them allocated and do not touch them. Progress happens inside
/// MPI calls, so a rank that computes while a request is in flight should call ``test()`` now and
/// then or simply ``wait()`` when it needs the result.
///
/// Dropping a request without waiting is a programmer error. To keep memory safe and the ranks in
/// step anyway, `deinit` **waits** for the request to complete and prints a warning naming the
/// operation on stderr (it does not trap, so an error thrown between start and wait still reaches
/// `Job.run` with its own message).
public final class CollectiveRequest {
    /// The MPI requests of the (possibly chunked) operation; empty once complete.
    private var requests: [MPI_Request?]
    /// Derived datatypes used by the requests, freed on completion.
    private var datatypes: [MPI_Datatype?]
    private let operation: String
    private let details: String
    private let rank: Int
    private let size: Int
    /// The communicator whose deadline, backoff and context ``wait()`` uses.
    private let communicator: Communicator
    /// Whether the operation has completed (successfully or not).
    public private(set) var isComplete: Bool

    init(operation: String, details: String, communicator: Communicator, pending: PendingCalls) {
        self.operation = operation
        self.details = details
        self.communicator = communicator
        self.rank = communicator.rank
        self.size = communicator.size
        self.requests = pending.requests
        self.datatypes = pending.datatypes
        self.isComplete = pending.requests.isEmpty
        if isComplete { freeDatatypes() }
    }

    /// Blocks until the operation has completed on this rank. Calling it again returns at once.
    ///
    /// Polls ``test()`` through the communicator's ``Communicator/poll(_:until:)``: spinning
    /// briefly, then backing off to sleeps of up to 1 ms, and throwing a ``CollectiveError`` that
    /// names the operation, the communicator's context and this rank after
    /// ``Communicator/collectiveTimeout`` seconds. The corresponding C function is `MPI_Testall`.
    public func wait() throws {
        guard !isComplete else { return }
        try communicator.wait(operation, details) { () throws(CollectiveError) -> Bool in try test() }
    }

    /// Whether the operation has completed, without blocking (and drives its progress).
    ///
    /// Returns `true` on every call after completion. The corresponding C function is `MPI_Testall`.
    public func test() throws(CollectiveError) -> Bool {
        guard !isComplete else { return true }
        var statuses = [MPI_Status](repeating: MPI_Status(), count: requests.count)
        var flag: Int32 = 0
        let code = MPI_Testall(Int32(requests.count), &requests, &flag, &statuses)
        if code != zsft_success() {
            complete()
            try check(code, statuses)
        }
        if flag != 0 { complete() }
        return isComplete
    }

    deinit {
        // After a collective timeout the job is being aborted: waiting again would only delay it.
        guard !isComplete, !communicator.hasGivenUp else { return }
        ProcessRuntime.writeToStandardError(
            "zero-sft: warning: rank \(rank): \(operation) (\(details)) was released without wait(); waiting for it now\n")
        do { try wait() } catch {
            ProcessRuntime.writeToStandardError("zero-sft: rank \(rank): \(error)\n")
        }
    }

    private func complete() {
        isComplete = true
        requests.removeAll()
        freeDatatypes()
    }

    private func freeDatatypes() {
        for index in datatypes.indices { MPI_Type_free(&datatypes[index]) }
        datatypes.removeAll()
    }

    /// Throws for a failed wait/test.
    private func check(_ code: Int32, _ statuses: [MPI_Status]) throws(CollectiveError) {
        guard code != zsft_success() else { return }
        throw CollectiveError(completing: operation, code: code, statuses: statuses, rank: rank, size: size, details: details)
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
