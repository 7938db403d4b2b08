/// What one rank's collectives sent and how long the rank waited for them, summed since the
/// communicator was made: ``Communicator/counters``. Take the difference of two readings for a
/// step (``subtracting(_:)``).
///
/// ``bytesSent`` is the traffic model of the ZeRO paper (Rajbhandari et al. 2020, section 7):
/// bandwidth-optimal ring algorithms, in which every rank sends `(N-1)/N` of a buffer of `B` bytes
/// per phase on `N` ranks. An all-gather (of `B` bytes gathered) and a reduce-scatter (of `B` bytes
/// reduced) are one phase each, an all-reduce two (a reduce-scatter and an all-gather), a broadcast
/// one (a scatter and an all-gather, averaged over the ranks). It is a deterministic figure of the
/// algorithm, independent of CPU load and of the algorithm Open MPI picks (for small buffers it may
/// send more, e.g. recursive doubling's `log2 N × B`); the link counters of the simulated cluster
/// (`launch/cluster exec HOST -- ip -s link`) give what actually crossed the wire. With one rank
/// everything is 0.
public struct CommunicationCounters: Sendable, Equatable, Codable {
    /// Bytes this rank sends under the ring model above.
    public var bytesSent: Int = 0
    /// Collectives started (barriers, broadcasts, all-reduces, all-gathers, reduce-scatters and
    /// rings; not ``Communicator/checkConsistency(_:bytes:)``'s own all-gathers).
    public var collectives: Int = 0
    /// Seconds this rank spent waiting for collectives to complete: in ``Communicator/poll(_:until:)``
    /// and its typed twin after the first unsuccessful test, and inside blocking all-reduces. The
    /// communication that compute did not hide.
    public var waitSeconds: Double = 0
    /// Passes of the progress hook (``Communicator/progressIfDue(_:)``): tests of the collectives in
    /// flight made from inside compute, between matrix products.
    public var progressPasses: Int = 0
    /// Seconds spent in those passes (what the hook costs the compute it runs in).
    public var progressSeconds: Double = 0
    /// The processor time of this rank's thread in those passes (`CLOCK_THREAD_CPUTIME_ID`): on a
    /// loaded host ``progressSeconds`` also counts time the thread was preempted.
    public var progressCPUSeconds: Double = 0
    /// Passes of the progress thread (`--progress-thread`, ``Communicator/startProgressThread()``)
    /// over the collectives in flight; 0 without it.
    public var progressThreadPasses: Int = 0
    /// The progress thread's processor time (`pthread_getcpuclockid`): what the thread took from
    /// the cores the ranks compute on.
    public var progressThreadCPUSeconds: Double = 0

    public init() {}

    /// The counts since `earlier`: `self - earlier`, field by field.
    public func subtracting(_ earlier: CommunicationCounters) -> CommunicationCounters {
        var difference = CommunicationCounters()
        difference.bytesSent = bytesSent - earlier.bytesSent
        difference.collectives = collectives - earlier.collectives
        difference.waitSeconds = waitSeconds - earlier.waitSeconds
        difference.progressPasses = progressPasses - earlier.progressPasses
        difference.progressSeconds = progressSeconds - earlier.progressSeconds
        difference.progressCPUSeconds = progressCPUSeconds - earlier.progressCPUSeconds
        difference.progressThreadPasses = progressThreadPasses - earlier.progressThreadPasses
        difference.progressThreadCPUSeconds = progressThreadCPUSeconds - earlier.progressThreadCPUSeconds
        return difference
    }

    enum CodingKeys: String, CodingKey {
        case bytesSent = "bytes_sent"
        case collectives
        case waitSeconds = "wait_seconds"
        case progressPasses = "progress_passes"
        case progressSeconds = "progress_seconds"
        case progressCPUSeconds = "progress_cpu_seconds"
        case progressThreadPasses = "progress_thread_passes"
        case progressThreadCPUSeconds = "progress_thread_cpu_seconds"
    }
}

extension Communicator {
    /// Counts one collective over a buffer of `bytes` bytes with `phases` ring phases
    /// (``CommunicationCounters``): `phases × bytes × (N-1)/N` bytes sent.
    func countTraffic(bytes: Int, phases: Int) {
        counters.collectives += 1
        counters.bytesSent += phases * (bytes / size) * (size - 1) + phases * (bytes % size) * (size - 1) / size
    }

    /// Adds the time since `start` to ``CommunicationCounters/waitSeconds``.
    func countWait(since start: ContinuousClock.Instant) {
        counters.waitSeconds += (ContinuousClock.now - start).inSeconds
    }
}

extension Duration {
    /// The duration in seconds, as a `Double` (whole seconds plus attoseconds).
    public var inSeconds: Double {
        Double(components.seconds) + Double(components.attoseconds) * 1e-18
    }
}
