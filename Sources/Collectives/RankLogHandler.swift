import Logging
import SystemPackage
#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// The swift-log handler of every zero-sft process: rank 0 speaks for the job, every rank reports
/// its own errors.
///
/// - `trace`…`notice`: printed by rank 0 only, on stdout, as the message alone (the log lines users
///   and tests read: banners, step lines, reports). Other ranks drop them.
/// - `warning`: rank 0 only, on stderr, `zero-sft: warning: <message>` (warnings are about inputs,
///   which every rank sees alike; one copy is enough).
/// - `error`, `critical`: every rank, on stderr, `zero-sft: rank R (host): <message>`.
///
/// The rank comes from the launcher's environment (`OMPI_COMM_WORLD_RANK`, `PMIX_RANK`, `PMI_RANK`;
/// 0 without a launcher), so the handler works before MPI is initialised and equals
/// `MPI_Comm_rank(MPI_COMM_WORLD)` after. It is also the `rank` metadata of every message.
/// Writes go through swift-system's `FileDescriptor.writeAll` (retries on `EINTR` and short writes);
/// stdout is flushed first so the two streams keep their order on a terminal.
///
/// `--debug` is a log level: commands set `logger.logLevel = .debug` (see ``Logger/zeroSFT(_:debug:)``).
public struct RankLogHandler: LogHandler {
    public var logLevel: Logger.Level = .info
    public var metadata: Logger.Metadata
    public var metadataProvider: Logger.MetadataProvider?
    public let rank: Int
    let label: String

    /// A handler for `label`, with the rank the launcher announced (0 without one).
    public init(label: String) {
        self.label = label
        self.rank = Int(ProcessRuntime.launcherRank) ?? 0
        self.metadata = ["rank": "\(rank)"]
    }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    public func log(event: LogEvent) {
        switch event.level {
        case .trace, .debug, .info, .notice:
            guard rank == 0 else { return }
            Self.write("\(event.message)\n", to: .standardOutput)
        case .warning:
            guard rank == 0 else { return }
            Self.write("zero-sft: warning: \(event.message)\n", to: .standardError)
        case .error, .critical:
            Self.write("zero-sft: rank \(rank) (\(ProcessRuntime.localHostName())): \(event.message)\n", to: .standardError)
        }
    }

    /// Writes `text` whole (every C stream flushed first, so `print` output and log lines keep their order).
    static func write(_ text: String, to descriptor: FileDescriptor) {
        fflush(nil)
        _ = try? descriptor.writeAll(text.utf8)
    }
}

extension Logger {
    /// zero-sft's logger for `label` (`zero-sft.train`, `zero-sft.eval`, …): the ``RankLogHandler``
    /// at `info`, or `debug` when `debug` is set (the `--debug` flag).
    public static func zeroSFT(_ label: String, debug: Bool = false) -> Logger {
        var logger = Logger(label: label) { RankLogHandler(label: $0) }
        logger.logLevel = debug ? .debug : .info
        return logger
    }
}
