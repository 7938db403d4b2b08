#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// Keeps the signals zero-sft handles away from a thread while it runs library code that a signal
/// must not interrupt: oneDNN's and BLIS's gemms.
///
/// oneDNN's JIT gemm kernels (2.6.3, Debian's; up to 3.11.1) point `rsp` at a heap workspace while
/// they run (uxlfoundation/oneDNN#4845, fixed by #4855 in 3.11.2): a signal delivered to the thread
/// then has the kernel push its frame into that heap memory, which `free` later finds corrupted
/// ("corrupted size vs. prev_size while consolidating", an abort). Measured: SmolLM2-135M on one rank,
/// `--blas onednn`, SIGTERM one second into the second step: 5 of 6 runs aborted (0 of 4 with OpenBLAS,
/// whose kernels keep `rsp` on the stack), and the stop's checkpoint was lost.
///
/// ``during(_:)`` blocks ``signals`` on the calling thread for the call (`pthread_sigmask`): a signal
/// sent meanwhile stays pending and is delivered when the call returns, or to another thread that does
/// not block it. The OpenMP workers oneDNN and BLIS start inside such a call inherit the blocked mask
/// and keep it, so they never take these signals at all. Two system calls per gemm (about 0.2 µs each).
public enum SignalDeferral {
    /// The signals `Collectives.StopSignals` installs handlers for: SIGTERM, SIGINT, and SIGUSR1 and
    /// SIGUSR2 (`launch/run`'s relayed stop requests). Signals without a handler push no frame.
    public static let signals: [Int32] = [SIGTERM, SIGINT, SIGUSR1, SIGUSR2]

    private static let set: sigset_t = {
        var set = sigset_t()
        sigemptyset(&set)
        for signal in signals { sigaddset(&set, signal) }
        return set
    }()

    /// Runs `body` with ``signals`` blocked on the calling thread, restoring its mask after.
    @inline(__always)
    public static func during<R>(_ body: () throws -> R) rethrows -> R {
        var previous = sigset_t()
        withUnsafePointer(to: set) { _ = pthread_sigmask(SIG_BLOCK, $0, &previous) }
        defer { _ = pthread_sigmask(SIG_SETMASK, &previous, nil) }
        return try body()
    }
}
