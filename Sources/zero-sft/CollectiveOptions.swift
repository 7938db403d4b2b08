import ArgumentParser
import Collectives

/// How long a rank waits in a collective: the options of every command that runs on ranks.
struct CollectiveOptions: ParsableArguments {
    @Option(name: .long, help: ArgumentHelp(
        "Seconds a rank waits in one collective before it aborts the whole job.",
        discussion: "The message names the collective, the step (and unit) and the rank that gave up. A rank that is stopped, dead or far behind otherwise hangs every other rank.",
        valueName: "seconds"))
    var collectiveTimeout: Double = 600
    @Option(name: .long, help: ArgumentHelp(
        "Milliseconds between two tests of the collectives in flight during compute; 0 turns the progress hook off.",
        discussion: "Open MPI moves a non-blocking collective only inside MPI calls: the model tests the prefetches and gradient reduce-scatters in flight between its matrix products, at most this often, so they run under compute.",
        valueName: "ms"))
    var progressInterval: Double = 1
    @Flag(name: .long, help: ArgumentHelp(
        "Drive the collectives in flight from a communication thread per rank (MPI_THREAD_MULTIPLE).",
        discussion: "The thread tests the stage-3 prefetches and advances the gradient reduce-scatters while the rank computes, sleeping 50 µs to 1 ms between passes (10 ms once nothing has moved for 100 ms); results are bitwise those without it. It needs a core of its own to pay: on a host with a core per rank it competes with compute (docs/multi-host.md). Combine with --progress-interval 0 to use the thread alone. Fails at start-up, naming this option, when the MPI library does not provide MPI_THREAD_MULTIPLE."))
    var progressThread = false

    func validate() throws {
        guard collectiveTimeout > 0, collectiveTimeout.isFinite else {
            throw ValidationError("--collective-timeout must be a positive number of seconds, got \(collectiveTimeout)")
        }
        guard progressInterval >= 0, progressInterval <= 60_000 else {
            throw ValidationError("--progress-interval must be in [0, 60000] milliseconds (0: off), got \(progressInterval)")
        }
    }

    /// What must be settled before MPI starts (before `Job.run`): `--progress-thread` needs
    /// `MPI_THREAD_MULTIPLE`.
    func prepareProcess() {
        if progressThread { Communicator.requireThreadMultiple(for: "--progress-thread") }
    }

    /// Sets the communicator's timeout, progress hook and (`--progress-thread`) starts its
    /// communication thread, and, with `checkingConsistency` (`--debug`), its check that all ranks
    /// run the same collectives.
    func apply(to communicator: Communicator, checkingConsistency: Bool) throws {
        communicator.collectiveTimeout = collectiveTimeout
        communicator.progressInterval = progressInterval > 0 ? .nanoseconds(Int64(progressInterval * 1e6)) : nil
        communicator.checksConsistency = checkingConsistency
        if progressThread { try communicator.startProgressThread() }
    }
}
