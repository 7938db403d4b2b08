#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// The life of one rank: run the work, then finalise MPI and exit, or abort the whole job.
public enum Job {
    /// Runs `body` on this rank. On success finalises MPI and exits 0. If `body` throws, prints
    /// `zero-sft: rank R/N (host): <error>` to stderr and calls `MPI_Abort`, so no other rank
    /// hangs in a collective; the exit code is 1.
    public static func run(_ body: (Communicator) throws -> Void) -> Never {
        runReturningExitCode { communicator in
            try body(communicator)
            return 0
        }
    }

    /// Like ``run(_:)``, but `body` returns the exit code of a clean finish, which every rank
    /// reaches after `MPI_Finalize` (use it when all ranks agree on a failure, e.g. a self-test).
    public static func runReturningExitCode(_ body: (Communicator) throws -> Int32) -> Never {
        ProcessRuntime.makeStdoutLineBuffered()
        let communicator: Communicator
        do {
            communicator = try Communicator.world()
        } catch {
            ProcessRuntime.flushStandardStreams()
            ProcessRuntime.writeToStandardError("zero-sft: rank \(ProcessRuntime.launcherRank) (\(ProcessRuntime.localHostName())): \(error)\n")
            exit(1)
        }
        let status: Int32
        do {
            status = try body(communicator)
        } catch {
            ProcessRuntime.flushStandardStreams()
            ProcessRuntime.writeToStandardError("zero-sft: rank \(communicator.rank)/\(communicator.size) (\(communicator.hostName)): \(error)\n")
            communicator.abort(exitCode: 1)
        }
        ProcessRuntime.flushStandardStreams()
        do {
            try communicator.finalise()
        } catch {
            ProcessRuntime.writeToStandardError("zero-sft: rank \(communicator.rank)/\(communicator.size) (\(communicator.hostName)): \(error)\n")
            exit(1)
        }
        exit(status)
    }
}
