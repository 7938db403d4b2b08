import Synchronization
#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// SIGTERM and SIGINT as a request to stop at the next step boundary; a second one ends the process at once.
///
/// A scheduler (Slurm, Kubernetes) or `mpirun` sends SIGTERM, a terminal SIGINT; the process then has
/// a grace period before SIGKILL. ``install()`` replaces the default action (die at once, nothing saved)
/// with a handler that only records the first signal in an atomic; the training loop reads
/// ``received`` once per step and the ranks agree on it inside the all-reduce the step already does
/// (`Trainer.trainStep`), so a signal that reached one rank only stops every rank at the same step,
/// and a rank waiting inside a collective when the signal arrives completes it (the handler returns,
/// `SA_RESTART` restarts an interrupted system call, and the wait goes on).
///
/// Why a handler and not a `sigwait` thread or a `DispatchSource`: both need SIGTERM/SIGINT blocked in
/// every thread before any thread is created, and Open MPI (`MPI_Init`'s progress and PMIx threads)
/// and OpenBLAS create threads we do not control; a process-directed signal is delivered to any
/// thread that does not block it, so a `sigwait` thread could miss it. A `sigaction` handler runs on
/// whichever thread the kernel picks, and it does only async-signal-safe work: one atomic
/// compare-exchange (lock-free), `getppid(2)`, and on a second signal `write(2)` of a message prepared
/// by ``install()`` and `_exit(2)` (POSIX.1-2017, 2.4.3: all are async-signal-safe). Nothing is
/// allocated, locked or formatted inside the handler.
///
/// A second signal ends the process at once (exit 128 + signal, no save), except a repeat sent by
/// the parent process (the launcher's own kill sequence, see `handle`).
///
/// The corresponding C functions are `sigaction` (`SA_SIGINFO | SA_RESTART`), `pthread_sigmask`
/// (the signals are unblocked on the calling thread, in case the parent started us with them blocked),
/// `getppid`, `write` and `_exit`.
public enum StopSignals {
    /// The first stop signal received (0: none). Initialised before a handler can touch it.
    private static let first = Atomic<Int32>(0)
    /// "second SIGTERM/SIGINT" messages, written by the handler (allocated once by ``install()``, never freed).
    nonisolated(unsafe) private static var termMessage: UnsafeMutableBufferPointer<UInt8>?
    nonisolated(unsafe) private static var interruptMessage: UnsafeMutableBufferPointer<UInt8>?
    nonisolated(unsafe) private static var isInstalled = false
    /// Whether a launcher started this process (``ProcessRuntime/isUnderLauncher``): only then is the
    /// parent's repeat part of a kill sequence. Set before the handlers are installed.
    nonisolated(unsafe) private static var parentIsLauncher = false

    /// Installs the handlers for SIGTERM and SIGINT (the messages are prepared once; a later call
    /// installs the handlers again, keeping a signal already recorded). Call it on the main thread after
    /// `MPI_Init` (``Job/run(_:)`` has done it), so that no library's handler installed during
    /// initialisation replaces ours.
    ///
    /// Under `launch/run` (``isRelayed``) call it also first thing, before the start-up work that precedes
    /// `MPI_Init` (resolving the model, parsing the data): a relayed SIGUSR1 arriving then otherwise
    /// killed the rank (SIGUSR1's default action), and `mpirun` took its kill sequence (60 s under
    /// `launch/run`) to exit 138, "the job failed". Recorded instead, it stops the job before step 1.
    public static func install() {
        if !isInstalled {
            isInstalled = true
            _ = first.load(ordering: .relaxed)  // initialise the global before any handler can run
            parentIsLauncher = ProcessRuntime.isUnderLauncher
            termMessage = prepare("\nzero-sft: second SIGTERM: exiting at once without saving (exit 143)\n")
            interruptMessage = prepare("\nzero-sft: second SIGINT: exiting at once without saving (exit 130)\n")
        }
        // launch/run relays its own SIGTERM through mpirun (which forwards SIGUSR1/SIGUSR2 at once and
        // SIGTERM only after its kill sequence's first grace period): SIGUSR1 is the stop request,
        // SIGUSR2 the second signal. Only when launch/run says so: otherwise they keep their default action.
        var handled = sigset_t()
        sigemptyset(&handled)
        for signal in [SIGTERM, SIGINT] + (isRelayed ? [SIGUSR1, SIGUSR2] : []) {
            var action = sigaction()
            action.__sigaction_handler.sa_sigaction = StopSignals.handle
            sigemptyset(&action.sa_mask)
            action.sa_flags = SA_RESTART | SA_SIGINFO
            sigaction(signal, &action, nil)
            sigaddset(&handled, signal)
        }
        // A parent may have started us with these signals blocked (a blocked mask is inherited: test
        // runners and some supervisors do it); unblocked on this thread, the kernel delivers them here.
        pthread_sigmask(SIG_UNBLOCK, &handled, nil)
    }

    /// The environment variable (`ZERO_SFT_SIGNAL_RELAY=1`) with which `launch/run` tells the ranks that
    /// SIGUSR1 is its relayed SIGTERM and SIGUSR2 its relayed second signal.
    public static let relayVariable = "ZERO_SFT_SIGNAL_RELAY"

    /// Whether `launch/run` started this rank (``relayVariable`` is 1): it relays its signals and reports
    /// the stop's exit status itself.
    public static var isRelayed: Bool { getenv(relayVariable).map { String(cString: $0) == "1" } ?? false }

    /// The first SIGTERM or SIGINT this process received since ``install()``, or 0 (a relayed
    /// SIGUSR1 counts as SIGTERM).
    public static var received: Int32 { first.load(ordering: .relaxed) }

    /// The exit status of a process ended by `signal` (the shell's convention: 128 + signal; 143 for
    /// SIGTERM, 130 for SIGINT).
    public static func exitCode(_ signal: Int32) -> Int32 { 128 + signal }

    /// This rank's stop request (0, SIGINT or another signal) as the two counters the ranks sum in an
    /// all-reduce to agree on it: `[asks with SIGINT, asks with another signal]`.
    public static func agreementCounts(_ request: Int32) -> [Int64] {
        [request == SIGINT ? 1 : 0, request != 0 && request != SIGINT ? 1 : 0]
    }

    /// The signal that `sums` (``agreementCounts(_:)`` summed over the ranks) agree on: SIGTERM (a
    /// scheduler's) when any rank asked with another signal than SIGINT, else SIGINT when one did, else nil.
    public static func agreed(_ sums: ArraySlice<Int64>) -> Int32? {
        precondition(sums.count == 2, "StopSignals.agreed: two counters expected")
        if sums[sums.startIndex + 1] > 0 { return SIGTERM }
        if sums[sums.startIndex] > 0 { return SIGINT }
        return nil
    }

    /// `SIGTERM`, `SIGINT`, or `signal N`.
    public static func name(_ signal: Int32) -> String {
        switch signal {
        case SIGTERM: "SIGTERM"
        case SIGINT: "SIGINT"
        default: "signal \(signal)"
        }
    }

    /// The handler: records the first signal; on a second one writes the prepared message and `_exit`s,
    /// unless the second comes from this process's parent when that is a launcher: the launcher (Open MPI's `orted`/`mpirun`,
    /// `slurmstepd`) repeating its request as a step of its own kill sequence (Open MPI 4.1 sends
    /// SIGTERM and, `odls_base_sigkill_timeout` seconds later, SIGKILL; under Slurm the ranks get the
    /// scheduler's SIGTERM directly and then `mpirun`'s), which must not cut the save short.
    private static let handle: @convention(c) (Int32, UnsafeMutablePointer<siginfo_t>?, UnsafeMutableRawPointer?) -> Void = {
        received, info, _ in
        let signal = received == SIGUSR1 || received == SIGUSR2 ? SIGTERM : received
        if received != SIGUSR2 {
            let (recorded, _) = first.compareExchange(expected: 0, desired: signal, ordering: .relaxed)
            guard !recorded else { return }
            if received == SIGUSR1 { return }  // the relay of a request already received
            if parentIsLauncher, let info, info.pointee._sifields._kill.si_pid == getppid() { return }
        }
        if let message = signal == SIGINT ? interruptMessage : termMessage, let base = message.baseAddress {
            _ = write(2, base, message.count)
        }
        _exit(128 + signal)
    }

    private static func prepare(_ text: String) -> UnsafeMutableBufferPointer<UInt8> {
        let bytes = Array(text.utf8)
        let buffer = UnsafeMutableBufferPointer<UInt8>.allocate(capacity: bytes.count)
        _ = buffer.initialize(from: bytes)
        return buffer
    }
}
