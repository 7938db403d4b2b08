import Foundation

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// Runs the `zero-sft` executable under `mpirun` (or directly) with a hard timeout, for tests.
///
/// The child runs in its own process group; on timeout the whole group and every descendant are
/// killed and ``MPIRunError/timedOut(command:seconds:stdout:stderr:)`` is thrown, so a hung
/// collective fails the test instead of hanging it. stdout and stderr are drained concurrently
/// (`poll`), so a chatty child never blocks on a full pipe.
public struct MPIRun {
    /// Pass as `ranks` to run the executable directly, without `mpirun` (a one-rank job without MPI).
    public static let withoutLauncher = 0

    /// Runs `zero-sft arguments…` on `ranks` ranks and returns its exit status and output.
    ///
    /// Under `mpirun` the command is `mpirun --allow-run-as-root --oversubscribe --bind-to none
    /// -x OPENBLAS_NUM_THREADS=1 -x ZERO_SFT_BLAS=openblas [-x KEY=VALUE for each environment entry] [launcherArguments…]
    /// -n ranks zero-sft arguments…`; `launcherArguments` adds mpirun options such as a hostfile
    /// (``LocalCluster/mpirunArguments``). With `ranks == 0` the executable runs directly, with
    /// launcher variables (`OMPI_*`, `PMIX_*`, `PMI_*`) removed from its environment. The status is
    /// the exit code, or 128 + the signal number when the process was killed by a signal.
    public static func run(
        ranks: Int, arguments: [String], environment: [String: String] = [:], launcherArguments: [String] = [],
        timeout: Double
    ) throws -> (status: Int32, stdout: String, stderr: String) {
        precondition(ranks >= 0, "ranks must be 0 (no mpirun) or positive, got \(ranks)")
        precondition(timeout > 0, "timeout must be positive, got \(timeout)")
        let binary = try ZeroSFTBinary.locate()
        var childEnvironment = inheritedEnvironment()
        let extra = testSettings(environment, inherited: childEnvironment)
        childEnvironment.merge(extra) { _, new in new }

        let command: [String]
        if ranks == withoutLauncher {
            command = [binary.path] + arguments
        } else {
            guard let mpirun = findOnPath("mpirun", in: childEnvironment["PATH"]) else {
                throw MPIRunError.launcherMissing(path: childEnvironment["PATH"] ?? "")
            }
            var launch = [mpirun, "--allow-run-as-root", "--oversubscribe", "--bind-to", "none"]
            for key in extra.keys.sorted() { launch += ["-x", "\(key)=\(extra[key]!)"] }
            command = launch + launcherArguments + ["-n", String(ranks), binary.path] + arguments
        }
        return try ChildProcess.run(command, environment: childEnvironment, timeout: timeout)
    }

    /// This process's environment without launcher variables (`OMPI_*`, `PMIX_*`, `PMI_*`), so a child
    /// zero-sft does not take itself for a rank of the test runner's own job.
    public static func inheritedEnvironment() -> [String: String] {
        ProcessInfo.processInfo.environment.filter { key, _ in
            !(key.hasPrefix("OMPI_") || key.hasPrefix("PMIX_") || key.hasPrefix("PMI_"))
        }
    }

    /// `environment` plus the settings every test run of zero-sft gets unless given: one OpenBLAS
    /// thread, and `ZERO_SFT_BLAS=openblas` unless `inherited` names a library — the tolerances against
    /// references were measured with OpenBLAS, and `--blas auto` (the default) would pick oneDNN on
    /// AVX-512 hosts. Tests of the choice itself pass `--blas` or `ZERO_SFT_BLAS`.
    public static func testSettings(_ environment: [String: String], inherited: [String: String]) -> [String: String] {
        var settings = environment
        if settings["OPENBLAS_NUM_THREADS"] == nil { settings["OPENBLAS_NUM_THREADS"] = "1" }
        if settings["ZERO_SFT_BLAS"] == nil && inherited["ZERO_SFT_BLAS"] == nil { settings["ZERO_SFT_BLAS"] = "openblas" }
        return settings
    }

    /// The first executable file named `name` in the colon-separated `path`.
    static func findOnPath(_ name: String, in path: String?) -> String? {
        for directory in (path ?? "/usr/local/bin:/usr/bin:/bin").split(separator: ":") {
            let candidate = "\(directory)/\(name)"
            if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
        }
        return nil
    }
}

/// Why ``MPIRun`` could not produce an exit status.
public enum MPIRunError: Error, CustomStringConvertible {
    /// The command did not finish within `seconds`; its process group was killed.
    case timedOut(command: String, seconds: Double, stdout: String, stderr: String)
    /// `mpirun` is not on the `PATH`.
    case launcherMissing(path: String)
    /// `posix_spawn` or `pipe` failed.
    case spawnFailed(command: String, errno: Int32)

    public var description: String {
        switch self {
        case let .timedOut(command, seconds, stdout, stderr):
            return "`\(command)` did not finish within \(seconds) s and was killed (process group and descendants).\n"
                + "--- last stdout ---\n\(Self.tail(stdout))\n--- last stderr ---\n\(Self.tail(stderr))"
        case let .launcherMissing(path):
            return "mpirun is not on the PATH (\(path)); install Open MPI (apt-get install openmpi-bin libopenmpi-dev)"
        case let .spawnFailed(command, code):
            return "could not start `\(command)`: \(String(cString: strerror(code)))"
        }
    }

    private static func tail(_ text: String, lines: Int = 20) -> String {
        text.split(separator: "\n", omittingEmptySubsequences: false).suffix(lines).joined(separator: "\n")
    }
}

/// Every process a test starts runs inside ``serially(_:)``: one child at a time in the whole test
/// process, across every suite.
///
/// Swift Testing runs suites in parallel, and `.serialized` orders tests only within one suite: two
/// `mpirun` jobs whose ranks spin in MPI waits would share 2 cores and starve each other (a CI flake
/// was seen). ``MPIRun`` holds the lock for the child's lifetime (its timeout starts once the lock is
/// held); a test that starts a `Process` itself wraps its whole life in ``serially(_:)``.
public enum TestProcesses {
    private static let lock = NSLock()

    /// Runs `body` while no other test process is running (not reentrant).
    public static func serially<T>(_ body: () throws -> T) rethrows -> T {
        lock.lock()
        defer { lock.unlock() }
        return try body()
    }
}

/// `posix_spawn` in a new process group, stdout/stderr collected with `poll`, killed on timeout.
enum ChildProcess {
    static func run(
        _ command: [String], environment: [String: String], timeout: Double
    ) throws -> (status: Int32, stdout: String, stderr: String) {
        try TestProcesses.serially { try runHoldingLock(command, environment: environment, timeout: timeout) }
    }

    private static func runHoldingLock(
        _ command: [String], environment: [String: String], timeout: Double
    ) throws -> (status: Int32, stdout: String, stderr: String) {
        let commandLine = command.joined(separator: " ")
        var outputPipe: [Int32] = [-1, -1]
        var errorPipe: [Int32] = [-1, -1]
        guard pipe(&outputPipe) == 0 else { throw MPIRunError.spawnFailed(command: commandLine, errno: errno) }
        guard pipe(&errorPipe) == 0 else {
            close(outputPipe[0]); close(outputPipe[1])
            throw MPIRunError.spawnFailed(command: commandLine, errno: errno)
        }
        // Only the dup2'ed copies (0, 1, 2) reach the child; no other test's process inherits these.
        for descriptor in outputPipe + errorPipe { _ = fcntl(descriptor, F_SETFD, FD_CLOEXEC) }

        // A new process group (so the whole job can be killed), default signal dispositions and
        // an empty signal mask (the test runner may block or ignore some): ``ProcessSpawn``.
        let spawned = ProcessSpawn.spawn(command, environment: environment,
                                         stdout: .descriptor(outputPipe[1]), stderr: .descriptor(errorPipe[1]))
        close(outputPipe[1])
        close(errorPipe[1])
        let pid: pid_t
        switch spawned {
        case .success(let child): pid = child
        case .failure(let error):
            close(outputPipe[0]); close(errorPipe[0])
            throw MPIRunError.spawnFailed(command: commandLine, errno: error.errno)
        }

        var collected: [[UInt8]] = [[], []]
        var descriptors = [pollfd(fd: outputPipe[0], events: Int16(POLLIN), revents: 0),
                           pollfd(fd: errorPipe[0], events: Int16(POLLIN), revents: 0)]
        defer { for descriptor in descriptors where descriptor.fd >= 0 { close(descriptor.fd) } }
        let start = ContinuousClock.now
        let deadline = start + .milliseconds(Int64(timeout * 1000))
        var exitStatus: Int32? = nil
        var exitedAt: ContinuousClock.Instant? = nil
        var chunk = [UInt8](repeating: 0, count: 1 << 16)

        while true {
            if exitStatus == nil, let status = reap(pid, blocking: false) {
                exitStatus = status
                exitedAt = .now
            }
            let open = descriptors.filter { $0.fd >= 0 }.count
            if let exitedAt {
                if open == 0 { break }
                // Output still held open by an orphaned descendant: give it two seconds, then kill it.
                if ContinuousClock.now - exitedAt > .seconds(2) {
                    killpg(pid, SIGKILL)
                    break
                }
            } else if ContinuousClock.now >= deadline {
                terminate(pid)
                let text = collected.map { String(decoding: $0, as: UTF8.self) }
                throw MPIRunError.timedOut(command: commandLine, seconds: timeout, stdout: text[0], stderr: text[1])
            }
            if open == 0 {
                usleep(10_000)
                continue
            }
            _ = poll(&descriptors, nfds_t(descriptors.count), 50)
            for index in descriptors.indices where descriptors[index].fd >= 0 && descriptors[index].revents != 0 {
                let count = chunk.withUnsafeMutableBytes { read(descriptors[index].fd, $0.baseAddress, $0.count) }
                if count > 0 {
                    collected[index] += chunk[0..<count]
                } else if count == 0 || (errno != EINTR && errno != EAGAIN) {
                    close(descriptors[index].fd)
                    descriptors[index].fd = -1
                }
            }
        }
        let text = collected.map { String(decoding: $0, as: UTF8.self) }
        return (exitStatus ?? -1, text[0], text[1])
    }

    /// The exit status of `pid` (128 + signal when signalled), or `nil` if it is still running.
    private static func reap(_ pid: pid_t, blocking: Bool) -> Int32? {
        var status: Int32 = 0
        while true {
            let result = waitpid(pid, &status, blocking ? 0 : WNOHANG)
            if result == pid { break }
            if result == -1 && errno == EINTR { continue }
            return result == 0 ? nil : -1
        }
        let signal = status & 0x7f
        return signal == 0 ? (status >> 8) & 0xff : 128 + signal
    }

    /// Kills the child's process group and every descendant (`mpirun` may start ranks in groups
    /// of their own): SIGTERM first so `mpirun` can clean up, SIGKILL after two seconds.
    private static func terminate(_ pid: pid_t) {
        let family = descendants(of: pid)
        killpg(pid, SIGTERM)
        for member in family { kill(member, SIGTERM) }
        let graceEnd = ContinuousClock.now + .seconds(2)
        while ContinuousClock.now < graceEnd, reap(pid, blocking: false) == nil { usleep(20_000) }
        killpg(pid, SIGKILL)
        for member in family + descendants(of: pid) { kill(member, SIGKILL) }
        _ = reap(pid, blocking: true)
    }

    /// The transitive children of `root`, read from `/proc/<pid>/stat`.
    static func descendants(of root: pid_t) -> [pid_t] {
        guard let entries = try? FileManager.default.contentsOfDirectory(atPath: "/proc") else { return [] }
        var parentOf: [pid_t: pid_t] = [:]
        for entry in entries {
            guard let pid = pid_t(entry),
                let stat = try? String(contentsOfFile: "/proc/\(entry)/stat", encoding: .utf8),
                let close = stat.lastIndex(of: ")")
            else { continue }
            // "pid (comm) state ppid ...": the command may contain spaces and parentheses.
            let fields = stat[stat.index(after: close)...].split(separator: " ")
            if fields.count > 1, let parent = pid_t(fields[1]) { parentOf[pid] = parent }
        }
        var result: [pid_t] = []
        var frontier = [root]
        while let parent = frontier.popLast() {
            let children = parentOf.filter { $0.value == parent }.map(\.key)
            result += children
            frontier += children
        }
        return result
    }
}
