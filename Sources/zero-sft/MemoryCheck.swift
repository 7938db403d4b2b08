import Foundation
import Models
import Sharding
import Training

/// Refuses a `train` run whose planned memory does not fit in what this host has available, before
/// any rank allocates (issue 12: `--seq-len 100000000` trapped allocating 25.6 GB for the RoPE table).
///
/// Each process runs it before `Job.run`, so it cannot ask MPI for the world size: it reads the
/// launcher's environment instead (``ranks(environment:)``). The plan is ``MemoryPlanner``'s (as
/// `zero-sft plan` prints it); the host figure is the sum of the predicted peak RSS of the ranks on this
/// host (the largest ones, when the host runs only some of the job's ranks), and the budget is
/// `MemAvailable` from `/proc/meminfo`.
enum MemoryCheck {
    /// The plan exceeds the available memory; says by how much and what to lower.
    struct Exceeded: Error, CustomStringConvertible {
        var description: String
    }

    /// `(ranks in the job, ranks on this host)` from Open MPI (`OMPI_COMM_WORLD_SIZE`,
    /// `OMPI_COMM_WORLD_LOCAL_SIZE`), PMI (`PMI_SIZE`, `MPI_LOCALNRANKS`) or Slurm (`SLURM_NTASKS`);
    /// `(1, 1)` without a launcher.
    static func ranks(environment: [String: String] = ProcessInfo.processInfo.environment) -> (world: Int, local: Int) {
        func first(_ names: [String]) -> Int? {
            names.lazy.compactMap { environment[$0].flatMap { Int($0) } }.first { $0 >= 1 }
        }
        let world = first(["OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "SLURM_NTASKS"]) ?? 1
        let local = first(["OMPI_COMM_WORLD_LOCAL_SIZE", "MPI_LOCALNRANKS", "SLURM_NTASKS_PER_NODE"]) ?? world
        return (world, min(local, world))
    }

    /// `MemAvailable` in bytes (what can be allocated without swapping), or nil when unreadable.
    static func available(meminfo path: String = "/proc/meminfo") -> Int? {
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else { return nil }
        for line in text.split(separator: "\n") where line.hasPrefix("MemAvailable:") {
            let fields = line.split(separator: " ")
            guard fields.count >= 2, let kilobytes = Int(fields[1]) else { return nil }
            return kilobytes * 1024
        }
        return nil
    }

    /// Throws ``Exceeded`` unless `force` when the ranks on this host are planned to need more than
    /// `MemAvailable`; does nothing when `/proc/meminfo` is unreadable.
    static func require(config: ModelConfig, options: TrainingOptions, force: Bool,
                        environment: [String: String] = ProcessInfo.processInfo.environment) throws {
        guard !force, let available = available() else { return }
        let (world, local) = ranks(environment: environment)
        let tokens = options.sequenceLength.multipliedReportingOverflow(by: options.microBatchSize)
        guard !tokens.overflow, tokens.partialValue <= 1 << 32 else {
            throw Exceeded(description: "--seq-len \(options.sequenceLength) × --micro-batch-size \(options.microBatchSize) tokens per micro-batch: "
                           + "far beyond any host's memory; lower --seq-len or --micro-batch-size")
        }
        var planner = MemoryPlanner(config: config, stage: options.stage, ranks: world,
                                    sequenceLength: options.sequenceLength, microBatchSize: options.microBatchSize)
        planner.reductionsInFlight = options.reductionsInFlight
        planner.parameterDType = options.parameterDType
        let peaks = planner.planAllRanks().map(\.predictedPeakRSS).sorted(by: >)
        let host = peaks.prefix(local).reduce(0, +)
        guard host > available else { return }
        let gib = { (bytes: Int) in String(format: "%.2f GiB", Double(bytes) / 1_073_741_824) }
        let stageHint = options.stage.rawValue < 3 ? ", raise --zero-stage (3 holds the least)" : ""
        throw Exceeded(description: """
            planned memory \(gib(host)) for the \(local) rank(s) on this host (peak RSS per rank up to \(gib(peaks.first ?? 0)); \
            \(world) rank(s), ZeRO \(options.stage.rawValue), --seq-len \(options.sequenceLength), --micro-batch-size \(options.microBatchSize)) \
            exceeds MemAvailable \(gib(available)): lower --seq-len or --micro-batch-size\(stageHint), \
            spread the ranks over more hosts, or pass --force to start anyway (see `zero-sft plan`)
            """)
    }
}
