#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

extension Communicator {
    /// The default of ``progressInterval``: a pass at most every millisecond.
    ///
    /// At 10 Gbit/s a millisecond is 1.25 MB on a link, within what a TCP socket buffers, so a rank
    /// that tests this often keeps its sends flowing and starts each next round of a ring or of
    /// libnbc's all-gather schedule within a millisecond of its data arriving.
    public static let defaultProgressInterval: Duration? = .milliseconds(1)

    /// The progress hook: runs `advance` — tests of the collectives in flight (`MPI_Testall`, the
    /// rings' ``RingReduceScatter/test()``) — if ``progressInterval`` has passed since the last pass,
    /// and otherwise returns after one clock read (`clock_gettime(CLOCK_MONOTONIC)`, tens of
    /// nanoseconds).
    ///
    /// Open MPI moves a non-blocking collective only inside MPI calls on the rank's thread: libnbc
    /// starts each round of an all-gather's schedule, and the TCP transport writes each socket
    /// buffer's worth of a large message and answers each rendezvous, only in a progress pass. A
    /// layer's forward or backward is a few large matrix products during which the rank makes no
    /// MPI call, so without this hook a prefetch or a gradient ring stands still until the rank
    /// next waits. The model calls the hook between its products (``UnitStore``'s
    /// `progressInFlight()`, which the ZeRO engine forwards here), so communication runs under
    /// compute. Each pass costs one progress pass per request tested (a `poll` of the sockets and
    /// libnbc's schedules: microseconds); passes and their time are counted in ``counters``
    /// (``CommunicationCounters/progressPasses``, ``CommunicationCounters/progressSeconds``).
    ///
    /// Returns without calling `advance` when the hook is off (``progressInterval`` `nil`) or the
    /// communicator has given up after a timeout. The result of every collective is the same with
    /// or without the hook: it changes only when operations advance, never what they compute.
    public func progressIfDue(_ advance: () throws -> Void) rethrows {
        guard let progressInterval, !hasGivenUp else { return }
        let now = ContinuousClock.now
        guard now - lastProgress >= progressInterval else { return }
        let cpu = Self.threadCPUSeconds()
        try advance()
        let end = ContinuousClock.now
        lastProgress = end
        counters.progressPasses += 1
        counters.progressSeconds += (end - now).inSeconds
        counters.progressCPUSeconds += Self.threadCPUSeconds() - cpu
    }

    /// The calling thread's processor time (`clock_gettime(CLOCK_THREAD_CPUTIME_ID)`), in seconds.
    static func threadCPUSeconds() -> Double {
        var time = timespec()
        clock_gettime(CLOCK_THREAD_CPUTIME_ID, &time)
        return Double(time.tv_sec) + Double(time.tv_nsec) * 1e-9
    }
}
