import Checkpoints
import Collectives
import Foundation
import Logging
import Models
import Sharding

/// The training half of `trainer_state.json` (under its `training` key; the format half is
/// ``CheckpointManifest``): everything besides the tensors that a resumed run needs to continue exactly.
public struct TrainingResumeState: Codable, Sendable, Equatable {
    /// Where the data stands: the plan is a function of (seed, step), so the step is the cursor; the
    /// rest is recorded to check that the resumed run plans the same rows.
    public struct DataCursor: Codable, Sendable, Equatable {
        /// The epoch (from 0) and the step within it that the next step starts at.
        public var epoch: Int
        public var stepInEpoch: Int
        /// The shuffle seed (`--seed`) and whether the order is shuffled.
        public var seed: UInt64
        public var shuffle: Bool
        /// Rows per optimizer step (ranks × micro-batch × accumulation) and tokens per row.
        public var rowsPerStep: Int
        public var sequenceLength: Int
        /// What packing kept of the data: a resumed run must see the same.
        public var examples: Int
        public var tokens: Int
        public var supervisedTokens: Int

        enum CodingKeys: String, CodingKey {
            case epoch, seed, shuffle, examples, tokens
            case stepInEpoch = "step_in_epoch"
            case rowsPerStep = "rows_per_step"
            case sequenceLength = "sequence_length"
            case supervisedTokens = "supervised_tokens"
        }
    }

    /// Optimizer steps completed.
    public var step: Int
    /// The steps the run was planned for (the learning-rate schedule's length).
    public var totalSteps: Int
    public var data: DataCursor
    /// The learning-rate schedule and the rate the next step uses.
    public var schedule: LearningRateSchedule
    public var nextLearningRate: Double
    /// AdamW's step count (its bias correction).
    public var optimizerSteps: Int
    /// Random state carried between steps: none (initialisation and the data order derive from the
    /// seed; there is no dropout), said so explicitly.
    public var randomState: String = "none: initialisation and data order derive from the seed"
    public var options: TrainingOptions
    /// The command line of the run that saved it.
    public var arguments: [String]
    /// The metrics lines so far, in `metrics.jsonl` of the folder.
    public var metricsFile: String = TrainingCheckpointFormat.metricsName
    public var metricsLines: Int

    enum CodingKeys: String, CodingKey {
        case step, data, schedule, options, arguments
        case totalSteps = "total_steps"
        case nextLearningRate = "next_learning_rate"
        case optimizerSteps = "optimizer_steps"
        case randomState = "random_state"
        case metricsFile = "metrics_file"
        case metricsLines = "metrics_lines"
    }
}

/// `trainer_state.json`: `{"checkpoint": …, "training": …}`.
struct TrainerStateFile: Codable {
    var checkpoint: CheckpointManifest
    var training: TrainingResumeState
}

/// Saves training checkpoints into `OUTPUT_DIR/checkpoint-STEP/` (see ``TrainingCheckpointFormat``).
///
/// ``save(_:)`` is the one call a caller needs — at `--save-every` steps, at the end, or when a
/// signal asks — and is a collective: every rank calls it at the same step boundary.
public final class CheckpointSaver {
    public let outputDirectory: URL
    /// `--keep-last`: complete checkpoints kept (nil: all).
    public let keepLast: Int?
    /// Rank 0: writes the model's `config.json`, tokenizer and template files into the folder; returns their names.
    let writeModelFiles: (URL) throws -> [String]
    let arguments: [String]
    let logger: Logger
    /// The step of the last checkpoint this process saved.
    public private(set) var lastSavedStep: Int?
    /// The test hook `ZERO_SFT_FAULT` (``FaultInjection``, phase `save`); nil: no fault.
    public var fault: FaultInjection?

    public init(outputDirectory: URL, keepLast: Int?, arguments: [String] = CommandLine.arguments,
                logger: Logger = .zeroSFT("zero-sft.checkpoint"), writeModelFiles: @escaping (URL) throws -> [String]) {
        precondition(keepLast.map { $0 >= 1 } ?? true, "CheckpointSaver: keepLast \(keepLast ?? 0)")
        self.outputDirectory = outputDirectory
        self.keepLast = keepLast
        self.arguments = arguments
        self.logger = logger
        self.writeModelFiles = writeModelFiles
    }

    /// Saves `trainer`'s state after its ``Trainer/completedSteps`` steps as `checkpoint-STEP` and
    /// returns the folder. A collective: every rank writes its own file (its partition of parameters
    /// and both moments, whatever the stage), then rank 0 the manifest and the model's files, then the
    /// completion marker; the folder is written under a temporary name, fsynced and renamed. Temporaries
    /// of killed saves are removed first; with `--keep-last K` older complete checkpoints after.
    ///
    /// A failure (disk full, read-only file system) throws an error naming the file and the operation;
    /// the previous checkpoints are untouched (the temporary folder is removed by the next save).
    @discardableResult
    public func save(_ trainer: Trainer) throws -> URL {
        let started = Date()
        let communicator = trainer.communicator, engine = trainer.engine
        let step = trainer.completedSteps, rank = communicator.rank
        let final = outputDirectory.appendingPathComponent(TrainingCheckpointFormat.directoryName(step: step))
        // Rank 0 prepares the temporary folder; its random name reaches the others by a broadcast, which
        // also orders their writes after its creation.
        var suffix = [Int64(0)]
        if rank == 0 {
            try FileOperation.perform("create directory", path: outputDirectory.path) {
                try FileManager.default.createDirectory(at: outputDirectory, withIntermediateDirectories: true)
            }
            let removed = try TrainingCheckpointDirectory.removeTemporaries(in: outputDirectory)
            if !removed.isEmpty { logger.info("removed the temporaries of an unfinished save: \(removed.joined(separator: ", "))") }
            suffix[0] = Int64.random(in: 0..<(1 << 40))
            let temporary = outputDirectory.appendingPathComponent(TrainingCheckpointFormat.temporaryName(step: step, suffix: String(suffix[0], radix: 36)))
            try FileOperation.perform("create directory", path: temporary.path) {
                try FileManager.default.createDirectory(at: temporary, withIntermediateDirectories: false)
            }
        }
        try suffix.withUnsafeMutableBufferPointer { try communicator.broadcast($0, root: 0) }
        let temporary = outputDirectory.appendingPathComponent(TrainingCheckpointFormat.temporaryName(step: step, suffix: String(suffix[0], radix: 36)))

        // Every rank: its partition of each role, as pieces of the stage-3 flat layout.
        let plan = engine.plan, layout = engine.layout
        let partition = plan.flatLayout(sharded: true, rank: rank)
        var pieces: [CheckpointPiece] = []
        for (index, unit) in layout.units.enumerated() {
            let owned = plan.units[index].range(rank: rank), at = partition.entries[index].offset
            for tensor in unit.tensors {
                let overlap = owned.clamped(to: tensor.range)
                if overlap.isEmpty { continue }
                pieces.append(CheckpointPiece(tensor: tensor.name, offset: overlap.lowerBound - tensor.offset, count: overlap.count,
                                              at: at + overlap.lowerBound - owned.lowerBound))
            }
        }
        // One segment per role where the role is sharded (its whole buffer); one per unit where it is replicated.
        func segments(_ buffer: RoleBuffer, sharded: Bool) -> [UnsafeBufferPointer<Float>] {
            if sharded { return [UnsafeBufferPointer(buffer.storage.pointer)] }
            return plan.units.indices.map { UnsafeBufferPointer(buffer.elements(plan.units[$0].range(rank: rank), of: $0)) }
        }
        let stage = engine.stage
        let shardName = TrainingCheckpointFormat.shardName(rank: rank, ranks: communicator.size)
        var midway: (() -> Void)? = nil
        if let fault, fault.isDue(.save, step: step, rank: rank) { midway = { fault.killThisProcess() } }
        let written = try TrainingCheckpointWriter.writeShard(
            to: temporary.appendingPathComponent(shardName),
            metadata: ["rank": String(rank), "ranks": String(communicator.size), "stage": String(stage.rawValue), "step": String(step)],
            pieces: pieces,
            roles: [("params", segments(engine.parameters.store, sharded: stage.shardsParameters)),
                    ("exp_avg", segments(engine.adamW.m, sharded: stage.shardsMoments)),
                    ("exp_avg_sq", segments(engine.adamW.v, sharded: stage.shardsMoments))],
            afterFirstRole: midway)
        // Every rank confirms its file (size and hash) to all: the collective before the completion marker.
        let hash = UInt64(written.xxh64, radix: 16) ?? 0
        let confirmed = try communicator.allGather([Int64(written.bytes), Int64(bitPattern: hash)])
        if rank == 0 {
            let shards = (0..<communicator.size).map { r -> CheckpointManifest.Shard in
                let digest = String(UInt64(bitPattern: confirmed[2 * r + 1]), radix: 16)
                return .init(file: TrainingCheckpointFormat.shardName(rank: r, ranks: communicator.size), rank: r,
                             bytes: Int(confirmed[2 * r]), xxh64: String(repeating: "0", count: 16 - digest.count) + digest)
            }
            var files = try writeModelFiles(temporary)
            let metricsURL = temporary.appendingPathComponent(TrainingCheckpointFormat.metricsName)
            let metrics = Data(trainer.metricsLines.map { $0 + "\n" }.joined().utf8)
            try FileOperation.perform("write", path: metricsURL.path) { try metrics.write(to: metricsURL) }
            files.append(TrainingCheckpointFormat.metricsName)
            var trainingPlan = trainer.plan
            let position = trainingPlan.position(step: step)
            let report = trainer.plan.report
            let state = TrainerStateFile(
                checkpoint: CheckpointManifest(step: step, stage: stage.rawValue, ranks: communicator.size,
                                               tensors: layout.units.flatMap { $0.tensors.map { .init(name: $0.name, shape: $0.shape) } },
                                               shards: shards, files: files.sorted()),
                training: TrainingResumeState(
                    step: step, totalSteps: trainer.totalSteps,
                    data: .init(epoch: position.epoch, stepInEpoch: position.stepInEpoch, seed: trainer.options.seed,
                                shuffle: trainer.options.shuffle, rowsPerStep: trainer.plan.rowsPerStep,
                                sequenceLength: trainer.options.sequenceLength, examples: trainer.plan.kept.count,
                                tokens: report.tokens, supervisedTokens: report.supervisedTokens),
                    schedule: trainer.schedule, nextLearningRate: trainer.schedule.rate(at: step),
                    optimizerSteps: engine.adamW.stepCount, options: trainer.options, arguments: arguments,
                    metricsLines: trainer.metricsLines.count))
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
            let manifestURL = temporary.appendingPathComponent(TrainingCheckpointFormat.manifestName)
            let manifest = try encoder.encode(state)
            try FileOperation.perform("write", path: manifestURL.path) { try manifest.write(to: manifestURL) }
            let markerURL = temporary.appendingPathComponent(TrainingCheckpointFormat.completionMarkerName)
            let marker = Data("step \(step), \(communicator.size) rank file(s) confirmed\n".utf8)
            try FileOperation.perform("write", path: markerURL.path) { try marker.write(to: markerURL) }
            try TrainingCheckpointDirectory.commit(temporary, as: final)
            let bytes = shards.reduce(0) { $0 + $1.bytes }
            logger.info(.init(stringLiteral: "saved \(final.path) (step \(step), \(communicator.size) rank file(s), "
                + String(format: "%.1f MB, %.2f s)", Double(bytes) / 1e6, Date().timeIntervalSince(started))))
            if let keepLast {
                let deleted = try TrainingCheckpointDirectory.keepLast(keepLast, in: outputDirectory)
                if !deleted.isEmpty { logger.info("--keep-last \(keepLast): removed checkpoint(s) \(deleted.map { "checkpoint-\($0)" }.joined(separator: ", "))") }
            }
        }
        // Nobody goes on before the checkpoint is committed (a failure on rank 0 aborts the job here).
        try communicator.barrier()
        lastSavedStep = step
        return final
    }
}

/// A checkpoint opened to resume from: its reader and training state, the checks that the resumed
/// run continues the same one, and the loading of this rank's ranges.
public final class CheckpointResume {
    public let reader: CheckpointReader
    public let state: TrainingResumeState
    /// The checkpoint's `metrics.jsonl` lines.
    public let metricsLines: [String]

    public var directory: URL { reader.directory }
    public var step: Int { state.step }

    /// Opens `directory` (see ``CheckpointReader/init(directory:)``) and decodes its training state.
    public init(directory: URL) throws {
        reader = try CheckpointReader(directory: directory)
        let manifestPath = directory.appendingPathComponent(TrainingCheckpointFormat.manifestName).path
        do { state = try JSONDecoder().decode(TrainerStateFile.self, from: reader.manifestData).training } catch let error as DecodingError {
            throw CheckpointError.fromDecodingError(error, path: manifestPath)
        }
        let metricsURL = directory.appendingPathComponent(state.metricsFile)
        let text = (try? String(contentsOf: metricsURL, encoding: .utf8)) ?? ""
        metricsLines = text.split(separator: "\n").filter { !$0.isEmpty }.map(String.init)
    }

    /// Resolves `--resume latest|PATH`: `latest` is the complete checkpoint of highest step in
    /// `outputDirectory` (the incomplete ones skipped are returned with their reasons); nil when there
    /// is none. A `PATH` that does not exist, is not a directory, or is an output directory (it holds
    /// `checkpoint-STEP` folders and no manifest of its own) is an `OptionError` saying so (it was "incomplete
    /// checkpoint: … found no marker and no trainer_state.json").
    public static func locate(_ argument: String, outputDirectory: URL?) throws -> (directory: URL?, skipped: [TrainingCheckpointDirectory.Entry]) {
        guard argument == "latest" else {
            let url = URL(fileURLWithPath: argument)
            var isDirectory: ObjCBool = false
            guard FileManager.default.fileExists(atPath: argument, isDirectory: &isDirectory) else {
                throw OptionError(message: "--resume \(argument): no such checkpoint folder (pass `latest` or an OUTPUT_DIR/checkpoint-STEP folder)")
            }
            guard isDirectory.boolValue else {
                throw OptionError(message: "--resume \(argument): not a directory (pass `latest` or an OUTPUT_DIR/checkpoint-STEP folder)")
            }
            let manifest = url.appendingPathComponent(TrainingCheckpointFormat.manifestName).path
            let entries = TrainingCheckpointDirectory.entries(in: url)
            if !FileManager.default.fileExists(atPath: manifest), !entries.isEmpty {
                let latest = entries.last(where: \.isComplete).map { ": the latest complete one is \($0.url.path)" } ?? ": none of them is complete"
                throw OptionError(message: "--resume \(argument): an output directory, not a checkpoint: it holds "
                    + "\(entries.map(\.url.lastPathComponent).joined(separator: ", "))\(latest) (or pass --resume latest --output-dir \(argument))")
            }
            return (url, [])
        }
        guard let outputDirectory else { throw OptionError(message: "--resume latest needs --output-dir (where the checkpoints are)") }
        let (latest, skipped) = TrainingCheckpointDirectory.latest(in: outputDirectory)
        return (latest?.url, skipped)
    }

    /// Refuses a model whose tensors differ from the checkpoint's (names or shapes), naming the first.
    public func checkModel(_ layout: ParameterLayout) throws {
        let model = layout.units.flatMap { $0.tensors.map { CheckpointManifest.Tensor(name: $0.name, shape: $0.shape) } }
        guard model != reader.manifest.tensors else { return }
        let saved = Dictionary(reader.manifest.tensors.map { ($0.name, $0.shape) }, uniquingKeysWith: { a, _ in a })
        let first = model.first { saved[$0.name] != $0.shape }
        throw OptionError(message: "--resume \(directory.path): the checkpoint's model differs from --model"
            + (first.map { ": tensor \($0.name) is \(saved[$0.name].map { "\($0)" } ?? "absent") in the checkpoint, \($0.shape) in the model" }
               ?? " (\(reader.manifest.tensors.count) tensors saved, \(model.count) in the model)"))
    }

    /// Refuses a resumed run that would not continue the saved one: another data set or packing
    /// (seed, shuffle, sequence length, examples kept), or another number of rows per step (ranks ×
    /// micro-batch × accumulation: the rank count and stage may change, the rows per step may not).
    /// Also checks the data cursor: the plan puts the next step where the checkpoint says it is.
    public func checkPlan(_ trainer: Trainer) throws {
        let data = state.data, report = trainer.plan.report
        var problems: [String] = []
        func compare<T: Equatable>(_ name: String, _ saved: T, _ now: T) { if saved != now { problems.append("\(name) \(saved) then, \(now) now") } }
        compare("rows per step (ranks × --micro-batch-size × --grad-accum)", data.rowsPerStep, trainer.plan.rowsPerStep)
        compare("--seq-len", data.sequenceLength, trainer.options.sequenceLength)
        compare("--seed", data.seed, trainer.options.seed)
        compare("shuffle", data.shuffle, trainer.options.shuffle)
        compare("--packing", state.options.packing, trainer.options.packing)
        compare("examples kept", data.examples, trainer.plan.kept.count)
        compare("tokens", data.tokens, report.tokens)
        compare("supervised tokens", data.supervisedTokens, report.supervisedTokens)
        if problems.isEmpty {
            var plan = trainer.plan
            let position = plan.position(step: state.step)
            compare("data cursor (epoch, step in epoch)", "\(data.epoch), \(data.stepInEpoch)", "\(position.epoch), \(position.stepInEpoch)")
        }
        if state.step > trainer.totalSteps { problems.append("the checkpoint is at step \(state.step), past this run's \(trainer.totalSteps) steps") }
        guard problems.isEmpty else {
            throw OptionError(message: "--resume \(directory.path): this run does not continue the saved one: " + problems.joined(separator: "; "))
        }
    }

    /// Checks every shard file's hash, the files split over the ranks (rank r hashes files r, r + n, …),
    /// then a barrier: a damaged file ends the job with an error naming it before any rank trains.
    /// Returns the bytes this rank hashed.
    @discardableResult
    public func verify(communicator: Communicator) throws -> Int {
        var bytes = 0
        for index in stride(from: communicator.rank, to: reader.manifest.shards.count, by: communicator.size) {
            bytes += try reader.verify(shard: index)
        }
        try communicator.barrier()
        return bytes
    }

    /// Fills parameter ranges from the checkpoint's `params` (a ``ZeroEngine`` initializer).
    public func parameterInitializer(layout: ParameterLayout)
        -> (_ unit: Int, _ elements: Range<Int>, _ destination: UnsafeMutableBufferPointer<Float>) throws -> Void
    {
        { unit, elements, destination in try self.fill("params", unit: unit, elements: elements, into: destination, layout: layout) }
    }

    /// Restores what the parameters do not carry: both AdamW moments (the ranges this rank keeps),
    /// AdamW's step count, the step to start at and the metrics so far. Checks the plan first.
    public func restore(into trainer: Trainer) throws {
        try checkPlan(trainer)
        let engine = trainer.engine
        for (role, buffer) in [("exp_avg", engine.adamW.m), ("exp_avg_sq", engine.adamW.v)] {
            for (index, unit) in engine.plan.units.enumerated() {
                let valid = buffer.layout.entries[index].elements.clamped(to: 0..<unit.count)
                if !valid.isEmpty { try fill(role, unit: index, elements: valid, into: buffer.elements(valid, of: index), layout: engine.layout) }
            }
        }
        trainer.resume(step: state.step, optimizerSteps: state.optimizerSteps, metricsLines: metricsLines)
    }

    /// Elements `elements` of unit `unit` of `role`, tensor by tensor (a unit's tensors lie back to back).
    func fill(_ role: String, unit: Int, elements: Range<Int>, into destination: UnsafeMutableBufferPointer<Float>, layout: ParameterLayout) throws {
        destination.update(repeating: 0)
        for tensor in layout.units[unit].tensors {
            let overlap = elements.clamped(to: tensor.range)
            if overlap.isEmpty { continue }
            let local = (overlap.lowerBound - elements.lowerBound)..<(overlap.upperBound - elements.lowerBound)
            try reader.read(role: role, tensor: tensor.name, elements: (overlap.lowerBound - tensor.offset)..<(overlap.upperBound - tensor.offset),
                            into: UnsafeMutableBufferPointer(rebasing: destination[local]))
        }
    }
}
