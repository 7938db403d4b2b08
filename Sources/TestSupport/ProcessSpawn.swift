import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// Starts a test's child process the one way the tests need: `posix_spawn` with stdin from
/// `/dev/null`, a new process group (so the whole job can be signalled or killed), an empty signal
/// mask and default dispositions for the signals a test runner may block or ignore (SIGPIPE, SIGTERM,
/// SIGINT, SIGHUP, SIGCHLD, SIGUSR1, SIGUSR2).
public enum ProcessSpawn {
    /// Where a child's stdout or stderr goes.
    public enum Output {
        /// Duplicated from this descriptor (`posix_spawn_file_actions_adddup2`).
        case descriptor(Int32)
        /// A file created or truncated at this path.
        case file(String)
    }

    /// Spawns `command` (`command[0]` an absolute path) with exactly `environment`; returns its pid, or
    /// the `errno` of `posix_spawn` (non-zero) as `.failure`.
    public static func spawn(_ command: [String], environment: [String: String], stdout: Output, stderr: Output) -> Result<pid_t, SpawnError> {
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        for (target, output) in [(Int32(1), stdout), (Int32(2), stderr)] {
            switch output {
            case .descriptor(let descriptor): posix_spawn_file_actions_adddup2(&actions, descriptor, target)
            case .file(let path): posix_spawn_file_actions_addopen(&actions, target, path, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
            }
        }
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))
        posix_spawnattr_setpgroup(&attributes, 0)
        var emptyMask = sigset_t()
        sigemptyset(&emptyMask)
        posix_spawnattr_setsigmask(&attributes, &emptyMask)
        var defaultSignals = sigset_t()
        sigemptyset(&defaultSignals)
        for signal in [SIGPIPE, SIGTERM, SIGINT, SIGHUP, SIGCHLD, SIGUSR1, SIGUSR2] { sigaddset(&defaultSignals, signal) }
        posix_spawnattr_setsigdefault(&attributes, &defaultSignals)
        let argv = command.map { strdup($0) } + [nil]
        let envp = environment.map { strdup("\($0.key)=\($0.value)") } + [nil]
        defer {
            for pointer in argv { free(pointer) }
            for pointer in envp { free(pointer) }
        }
        var pid: pid_t = 0
        let result = posix_spawn(&pid, command[0], &actions, &attributes, argv, envp)
        return result == 0 ? .success(pid) : .failure(SpawnError(errno: result))
    }

    /// `posix_spawn`'s error number.
    public struct SpawnError: Error {
        public var errno: Int32
    }
}
