internal import CMPI
import SystemPackage
#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// Process-wide start-up state: whether we run under a launcher, stdout buffering, MPI finalisation.
///
/// All of it is touched from the thread that calls `Communicator.world()` (the main thread in
/// practice), which is why the globals are `nonisolated(unsafe)`.
enum ProcessRuntime {
    /// Environment variables that a launcher sets on every rank. Open MPI's `mpirun` sets all of
    /// `OMPI_COMM_WORLD_SIZE` and `PMIX_RANK`; MPICH's Hydra and Slurm set `PMI_RANK`.
    static let launcherVariables = ["OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_RANK"]

    /// Whether this process was started by an MPI launcher (and so must initialise MPI).
    static var isUnderLauncher: Bool {
        launcherVariables.contains { getenv($0) != nil }
    }

    /// The rank the launcher announced in the environment, for messages before MPI is up.
    static var launcherRank: String {
        for name in ["OMPI_COMM_WORLD_RANK", "PMIX_RANK", "PMI_RANK"] {
            if let value = getenv(name) { return String(cString: value) }
        }
        return "?"
    }

    nonisolated(unsafe) private static var stdoutIsLineBuffered = false

    /// Makes stdout line-buffered, once, so that `mpirun` receives every complete line even when
    /// the rank dies right after printing it (stdout is block-buffered when it is a pipe).
    static func makeStdoutLineBuffered() {
        guard !stdoutIsLineBuffered else { return }
        stdoutIsLineBuffered = true
        zsft_make_stdout_line_buffered()
    }

    nonisolated(unsafe) private static var finaliseIsRegistered = false

    /// Registers an `atexit` handler that finalises MPI if the program exits without going
    /// through `Job.run` (so `mpirun` does not report a rank that "exited without finalize").
    static func registerFinaliseAtExit() {
        guard !finaliseIsRegistered else { return }
        finaliseIsRegistered = true
        atexit { _ = ProcessRuntime.finaliseIfNeeded() }
    }

    /// Calls `MPI_Finalize` when MPI is initialised and not yet finalised; returns its error code.
    static func finaliseIfNeeded() -> Int32 {
        // The progress thread calls MPI: it ends first.
        ProgressThread.running?.stop()
        var initialised: Int32 = 0
        var finalised: Int32 = 0
        MPI_Initialized(&initialised)
        MPI_Finalized(&finalised)
        guard initialised != 0, finalised == 0 else { return zsft_success() }
        return MPI_Finalize()
    }

    /// Whether MPI is initialised and not finalised (so `MPI_Abort` can be called).
    static var mpiIsActive: Bool {
        var initialised: Int32 = 0
        var finalised: Int32 = 0
        MPI_Initialized(&initialised)
        MPI_Finalized(&finalised)
        return initialised != 0 && finalised == 0
    }

    /// Flushes stdout (and every other C stream), so nothing printed is lost at exit or abort.
    static func flushStandardStreams() {
        fflush(nil)
    }

    /// Writes `text` to stderr (file descriptor 2, unbuffered) whole: swift-system's `writeAll`
    /// retries short writes and `EINTR`. A failing stderr is ignored (there is nowhere left to say so).
    static func writeToStandardError(_ text: String) {
        _ = try? FileDescriptor.standardError.writeAll(text.utf8)
    }

    /// The host name from `gethostname`, for the single-process mode.
    static func localHostName() -> String {
        var buffer = [CChar](repeating: 0, count: 256)
        guard gethostname(&buffer, buffer.count - 1) == 0 else { return "localhost" }
        let bytes = buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }
        return String(decoding: bytes, as: UTF8.self)
    }
}
