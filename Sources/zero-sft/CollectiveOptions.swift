import ArgumentParser
import Collectives

/// How long a rank waits in a collective: the options of every command that runs on ranks.
struct CollectiveOptions: ParsableArguments {
    @Option(name: .long, help: ArgumentHelp(
        "Seconds a rank waits in one collective before it aborts the whole job.",
        discussion: "The message names the collective, the step (and unit) and the rank that gave up. A rank that is stopped, dead or far behind otherwise hangs every other rank.",
        valueName: "seconds"))
    var collectiveTimeout: Double = 600

    func validate() throws {
        guard collectiveTimeout > 0, collectiveTimeout.isFinite else {
            throw ValidationError("--collective-timeout must be a positive number of seconds, got \(collectiveTimeout)")
        }
    }

    /// Sets the communicator's timeout and, with `checkingConsistency` (`--debug`), its check that
    /// all ranks run the same collectives.
    func apply(to communicator: Communicator, checkingConsistency: Bool) {
        communicator.collectiveTimeout = collectiveTimeout
        communicator.checksConsistency = checkingConsistency
    }
}
