import ArgumentParser
import Checkpoints
import Foundation
import Kernels
import ModelIO
import Models
import Sharding
import Training

/// `zero-sft plan`: predicted per-rank and per-host memory for a grid of rank counts and stages.
struct PlanCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "plan",
        abstract: "Predict each rank's memory by category, and the host's, for rank counts × ZeRO stages (no MPI, instant).",
        discussion: """
            Per cell: the ledger's categories of one rank (every rank holds the same: gradient \
            reduce-scatters go round a ring, so no rank roots a reduction), what only the OS sees \
            (classifier chunk buffers, Open MPI temporaries, OpenBLAS's packing buffer, the runtime \
            baseline), the predicted peak RSS per rank, the sum over all ranks when they share one \
            host, and whether that fits in this machine's MemTotal. \
            See docs/memory-scaling.md for the model and how it compares with measurements.
            """)

    @OptionGroup var modelOptions: ModelOptions
    @Option(name: .long, help: "Rank counts, comma-separated.") var ranks: String = "1,2,4,8"
    @Option(name: .long, help: "ZeRO stages, comma-separated.") var zeroStage: String = "0,1,2,3"
    @Option(name: .long, help: "Tokens per packed row.") var seqLen: Int = 512
    @Option(name: .long, help: "Packed rows per micro-batch on each rank.") var microBatchSize: Int = 4
    @Option(name: .long, help: "The engine's cap on stage 2–3 reduce-scatters in flight (as `train --reductions-in-flight`); the plan assumes it is reached.")
    var reductionsInFlight: Int = ZeroEngine.defaultReductionsInFlight
    @Option(name: .long, help: ArgumentHelp("The dtype parameters are all-gathered in and read in (as `train --param-dtype`): bf16 gathers half-size buffers at stage 3 and holds rounded copies of the units in use at stages 0–2.", valueName: "fp32|bf16"))
    var paramDtype: ParameterDType = .fp32
    @Option(name: .long, help: "Host memory in bytes to check against (default: MemTotal from /proc/meminfo).")
    var hostMemory: Int?
    @Flag(name: .long, help: "Print the table as JSON.") var json = false
    /// `--blas` and `--precision` as `train` takes them: what to plan for (not applied here). bf16 adds
    /// each thread's bf16 operand copies (in the blas column), oneDNN its runtime (the runtime column).
    @OptionGroup var blasOptions: BLASOptions
    @Option(name: .long, help: ArgumentHelp(
        "The training data, for the data column: a prepared token file (exact: its index, and the mapping shared per host) or JSONL (estimated: 8 bytes per token in every rank, tokens ≈ bytes / 4).",
        valueName: "file"))
    var data: String?

    /// The data's per-rank memory (``DataMemory``) and how it was found.
    func dataMemory() throws -> (memory: DataMemory, note: String)? {
        guard let data else { return nil }
        if PreparedFile.isPrepared(path: data) {
            let file = try PreparedFile(path: data)
            return (DataMemory.planned(examples: file.count, tokens: file.tokenCount, prepared: true, fileBytes: file.mappedBytes),
                    "\(data): prepared, \(file.count) examples, \(file.tokenCount) tokens, \(MemoryLedger.format(file.mappedBytes)) mapped (one copy per host)")
        }
        let bytes = try FileOperation.perform("read the size of", path: data) {
            (try FileManager.default.attributesOfItem(atPath: data)[.size] as? Int) ?? 0
        }
        let lines = try FileContents.read(data).reduce(0) { $0 + ($1 == UInt8(ascii: "\n") ? 1 : 0) }
        return (DataMemory.planned(examples: lines, tokens: bytes / 4, prepared: false),
                "\(data): JSONL, ~\(bytes / 4) tokens estimated from \(bytes) bytes, held in every rank (zero-sft prepare maps it instead)")
    }

    func validate() throws {
        _ = try parsedRanks()
        _ = try parsedStages()
        let tokens = TrainingOptions.maximumSequenceLength, rows = TrainingOptions.maximumRows
        guard (2...tokens).contains(seqLen) else { throw ValidationError("--seq-len must be in [2, \(tokens)] (got \(seqLen))") }
        guard (1...rows).contains(microBatchSize) else {
            throw ValidationError("--micro-batch-size must be in [1, \(rows)] (got \(microBatchSize))")
        }
        guard reductionsInFlight >= 1 else { throw ValidationError("--reductions-in-flight must be at least 1 (got \(reductionsInFlight))") }
        if let hostMemory, hostMemory <= 0 { throw ValidationError("--host-memory must be positive (got \(hostMemory))") }
    }

    func parsedRanks() throws -> [Int] {
        let values = ranks.split(separator: ",").map { Int($0.trimmingCharacters(in: .whitespaces)) }
        guard !values.isEmpty, values.allSatisfy({ ($0 ?? 0) >= 1 }) else {
            throw ValidationError("--ranks must be positive integers separated by commas (got \"\(ranks)\")")
        }
        return values.map { $0! }
    }

    func parsedStages() throws -> [ZeroStage] {
        let values = zeroStage.split(separator: ",").map { ZeroStage(argument: $0.trimmingCharacters(in: .whitespaces)) }
        guard !values.isEmpty, values.allSatisfy({ $0 != nil }) else {
            throw ValidationError("--zero-stage must be stages 0–3 separated by commas (got \"\(zeroStage)\")")
        }
        return values.map { $0! }
    }

    /// One cell of the grid, as printed and as JSON.
    struct Cell: Codable {
        var rank0: MemoryPlan
        var smallestRank: MemoryPlan
        /// Predicted peak RSS of every rank, rank 0 first.
        var rankPeaks: [Int]
        var hostBytes: Int
        var hostMemory: Int
        var fits: Bool
        enum CodingKeys: String, CodingKey {
            case rank0 = "rank_0", smallestRank = "smallest_rank", rankPeaks = "rank_peaks", hostBytes = "host_bytes",
                 hostMemory = "host_memory", fits
        }
    }

    func run() throws {
        let source = try modelOptions.resolve()
        Session.warn(source)
        let config = source.config
        let memory = try hostMemory ?? HostMemory.total()
        let dataMemory = try self.dataMemory()
        let library = try blasOptions.library()
        var cells: [Cell] = []
        for n in try parsedRanks() {
            for stage in try parsedStages() {
                var planner = MemoryPlanner(config: config, stage: stage, ranks: n, sequenceLength: seqLen, microBatchSize: microBatchSize)
                planner.reductionsInFlight = reductionsInFlight
                planner.parameterDType = paramDtype
                planner.precision = blasOptions.precision
                planner.library = library
                if let dataMemory { planner.data = dataMemory.memory }
                let plans = planner.planAllRanks()
                let host = plans.reduce(0) { $0 + $1.predictedPeakRSS }
                cells.append(Cell(rank0: plans[0], smallestRank: plans.min { $0.predictedPeakRSS < $1.predictedPeakRSS }!,
                                  rankPeaks: plans.map(\.predictedPeakRSS), hostBytes: host, hostMemory: memory, fits: host <= memory))
            }
        }
        if json {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.sortedKeys, .prettyPrinted]
            print(String(decoding: try encoder.encode(cells), as: UTF8.self))
            return
        }
        let psi = ParameterLayout(config: config).parameterCount
        print("\(modelOptions.model): \(String(format: "%.2f", Double(psi) / 1e6))M parameters, seq-len \(seqLen), "
              + "micro-batch \(microBatchSize) (\(seqLen * microBatchSize) tokens); host memory \(Self.gib(memory)) GiB")
        if let dataMemory { print("data: \(dataMemory.note)") }
        print("per rank, MiB: the ledger's categories | what only the OS sees | predicted peak RSS; host = all ranks on one host")
        let header = ["N", "stage", "params", "gathered", "grads", "grad buf", "moments", "act", "comm", "data",
                      "classif", "mpi tmp", "blas", "runtime", "peak/rank", "host GiB", "fits"]
        var rows = [header]
        for cell in cells {
            let p = cell.rank0
            let mib = { (bytes: Int) in String(format: "%.1f", Double(bytes) / 1_048_576) }
            rows.append(["\(p.ranks)", "\(p.stage.rawValue)", mib(p.parameters), mib(p.gatheredParameters), mib(p.gradients),
                         mib(p.gradientBuffers), mib(p.optimizerMoments), mib(p.activations), mib(p.communication), mib(p.data),
                         mib(p.classifierBuffers), mib(p.collectiveTemporaries), mib(p.blasBuffer + p.bf16Operands), mib(p.runtimeBaseline),
                         mib(p.predictedPeakRSS), Self.gib(cell.hostBytes), cell.fits ? "yes" : "NO"])
        }
        let widths = header.indices.map { column in rows.map { $0[column].count }.max()! }
        for row in rows {
            print(row.indices.map { String(repeating: " ", count: widths[$0] - row[$0].count) + row[$0] }.joined(separator: "  "))
        }
    }

    static func gib(_ bytes: Int) -> String { String(format: "%.2f", Double(bytes) / 1_073_741_824) }
}

/// The machine's memory, from `/proc/meminfo`.
enum HostMemory {
    struct Unreadable: Error, CustomStringConvertible {
        var reason: String
        var description: String { "cannot read MemTotal from /proc/meminfo: \(reason); pass --host-memory BYTES" }
    }

    /// `MemTotal` in bytes.
    static func total() throws -> Int {
        let text: String
        do { text = try String(contentsOfFile: "/proc/meminfo", encoding: .utf8) } catch { throw Unreadable(reason: FileOperation.reason(error)) }
        for line in text.split(separator: "\n") where line.hasPrefix("MemTotal:") {
            let fields = line.split(separator: " ")
            guard fields.count >= 2, let kilobytes = Int(fields[1]) else { throw Unreadable(reason: "malformed line \"\(line)\"") }
            return kilobytes * 1024
        }
        throw Unreadable(reason: "no MemTotal line")
    }
}
