import ArgumentParser
import Checkpoints
import Collectives
import Foundation
import ModelIO
import Models
import Sharding
import Training

/// Options shared by every command that builds a model.
struct ModelOptions: ParsableArguments {
    @Option(name: .long, help: ArgumentHelp(
        "An HF model directory (config.json + model.safetensors or an index; F32/F16/BF16), a .gguf file, a preset name (random init: \(ModelPreset.all.map(\.name).joined(separator: ", "))), an HF config.json (random init) or a training checkpoint folder OUTPUT_DIR/checkpoint-STEP (its parameters; train starts from them at step 0 with fresh optimizer state).",
        valueName: "model"))
    var model: String = "tiny"

    /// `--model` resolved, once per process and before any MPI work: the config, the weights (every
    /// tensor's name and shape checked), the tokenizer's files and the stop ids. Pass the value on.
    func resolve() throws -> ModelSource {
        try ModelSource.open(model)
    }
}

/// The training options every training-like command takes.
struct TrainingArguments: ParsableArguments {
    @Option(name: .long, help: "ZeRO stage: 0 data parallel, 1 shard AdamW moments, 2 also gradients, 3 also parameters.")
    var zeroStage: ZeroStage = .three
    @Option(name: .long, help: ArgumentHelp(
        "Stages 2–3: gradient reduce-scatters in flight at once; each holds one unit's full-size gradient.",
        discussion: "A rank that reaches the cap completes the oldest first. Higher overlaps more communication with the backward and costs one more unit of memory per step of the cap."))
    var reductionsInFlight: Int = ZeroEngine.defaultReductionsInFlight
    @Option(name: .long, help: ArgumentHelp(
        "Stage 3: units whose all-gather runs ahead of the one in use; each holds one more unit's full parameters.",
        discussion: "1 gathers the next unit while this one computes; more smooths ranks that drift apart, at one unit of memory each."))
    var prefetchDepth: Int = ShardedParameters.defaultPrefetchDepth
    @Option(name: .long, help: ArgumentHelp(
        "The dtype parameters are all-gathered in and read by the model in: fp32 (the default) or bf16 (FSDP's param_dtype).",
        discussion: "bf16 rounds every parameter the forward and backward read (norm weights and embeddings included) to the nearest bf16; at --zero-stage 3 the all-gathers then move half the bytes. Master parameters, gradients, their reduce-scatters and AdamW stay fp32. Independent of --precision, which rounds the gemm operands; the two together are FSDP's MixedPrecisionPolicy(param_dtype=bfloat16) under autocast.",
        valueName: "fp32|bf16"))
    var paramDtype: ParameterDType = .fp32
    @Option(name: .long, help: "Packed rows per micro-batch on each rank.")
    var microBatchSize: Int = 4
    @Option(name: .long, help: "Tokens per packed row; longer examples are handled by --long-examples (and counted).")
    var seqLen: Int = 512
    @Option(name: .long, help: "Micro-batches per optimizer step on each rank.")
    var gradAccum: Int = 1
    @Option(name: .long, help: "Peak learning rate (TRL's SFT default; fine-tuning uses 5e-6 to 5e-5).")
    var lr: Double = TrainingOptions().learningRate
    @Option(name: .long, help: "Learning rate at the end of the cosine decay.")
    var minLr: Double = 0
    @Option(name: .long, help: "Linear warm-up steps before the cosine decay.")
    var warmupSteps: Int = 0
    @Option(name: .long, help: "Optimizer steps (default: --epochs epochs of the data).")
    var maxSteps: Int?
    @Option(name: .long, help: "Epochs to train, the alternative to --max-steps (default 1); the learning-rate schedule spans them all.")
    var epochs: Int?
    @Option(name: .long, help: ArgumentHelp(
        "How examples fill rows of --seq-len tokens: bfd (best-fit decreasing within shuffled windows of 2048 examples), greedy (in shuffled order), none (one example per row).",
        valueName: "bfd|greedy|none"))
    var packing: PackingMethod = .bfd
    @Option(name: .long, help: "AdamW decoupled weight decay (not applied to norm weights and biases).")
    var weightDecay: Double = 0
    @Option(name: .long, help: "Clip the global gradient L2 norm to this value (0: no clipping).")
    var clipGradNorm: Double = 1
    @Option(name: .long, help: "Seed for initialisation and data order.")
    var seed: UInt64 = 42
    @Flag(name: .long, help: "Keep the data order (no shuffling per epoch).")
    var noShuffle = false
    @Option(name: .long, help: "Print a line every this many steps.")
    var logEvery: Int = 1
    @Option(name: .long, help: "Write one JSON object per logged step to this file (rank 0).")
    var metricsFile: String?
    @Flag(name: .long, help: "Check every layer for NaN/Inf, print a parameter checksum per step and the sharding plan.")
    var debug = false

    func options() throws -> TrainingOptions {
        var o = TrainingOptions()
        o.stage = zeroStage
        o.reductionsInFlight = reductionsInFlight
        o.prefetchDepth = prefetchDepth
        o.parameterDType = paramDtype
        o.microBatchSize = microBatchSize
        o.sequenceLength = seqLen
        o.gradientAccumulation = gradAccum
        o.learningRate = lr
        o.minimumLearningRate = minLr
        o.warmupSteps = warmupSteps
        o.maxSteps = maxSteps
        o.epochs = epochs
        o.packing = packing
        o.weightDecay = weightDecay
        o.clipGradientNorm = clipGradNorm
        o.seed = seed
        o.shuffle = !noShuffle
        o.logEvery = logEvery
        o.metricsFile = metricsFile
        o.debug = debug
        return o
    }

    func validate() throws {
        do { try options().validate() } catch let error as OptionError { throw ValidationError(error.message) }
    }

    /// Settings that are valid but have no effect in this run, as warnings: `--prefetch-depth` below
    /// stage 3 (nothing is gathered), `--reductions-in-flight` below stage 2 (no per-unit
    /// reduce-scatters), and a warm-up of at least the run's steps (the learning rate never reaches
    /// `--lr`). Each names the option and what happens instead (DeepSpeed ignores such keys silently).
    static func ignoredSettings(_ options: TrainingOptions, totalSteps: Int) -> [String] {
        var warnings: [String] = []
        if options.prefetchDepth != ShardedParameters.defaultPrefetchDepth, options.stage != .three {
            warnings.append("--prefetch-depth \(options.prefetchDepth) has no effect at --zero-stage \(options.stage.rawValue): only stage 3 gathers parameters")
        }
        if options.reductionsInFlight != ZeroEngine.defaultReductionsInFlight, !options.stage.shardsGradients {
            warnings.append("--reductions-in-flight \(options.reductionsInFlight) has no effect at --zero-stage \(options.stage.rawValue): "
                + "stages 0–1 reduce the gradients after the backward, not unit by unit")
        }
        if options.warmupSteps >= totalSteps, totalSteps > 0 {
            // Every step is in the warm-up, whose rate rises: the last step's is the highest.
            let peak = LearningRateSchedule(peak: options.learningRate, warmupSteps: options.warmupSteps, totalSteps: totalSteps)
                .rate(at: totalSteps - 1)
            warnings.append("--warmup-steps \(options.warmupSteps) is not below the run's \(totalSteps) step\(totalSteps == 1 ? "" : "s"): "
                + "the learning rate never reaches --lr \(options.learningRate) (at most \(String(format: "%.3g", peak)))")
        }
        return warnings
    }
}

struct TrainCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "train",
        abstract: "Fine-tune with the masked SFT loss, ZeRO-sharded across the MPI ranks (one rank without mpirun).")

    @OptionGroup var modelOptions: ModelOptions
    @Option(name: .long, help: "Data: JSONL of messages, prompt/completion or alpaca records (or alpaca JSON), pre-tokenized {\"input_ids\": [...], \"labels\": [...]} (-100: not trained), or a token file from zero-sft prepare (recognised by its magic).")
    var data: String
    @OptionGroup var text: TextDataOptions
    @OptionGroup var training: TrainingArguments
    @OptionGroup var evaluation: EvaluationArguments
    @OptionGroup var long: LongExampleOptions
    @OptionGroup var collectives: CollectiveOptions
    @OptionGroup var blasOptions: BLASOptions
    @Option(name: .long, help: "Write the trained model here as an HF directory (config.json, model.safetensors, generation_config.json, tokenizer files) and the checkpoints as checkpoint-STEP folders; refuses an existing non-empty directory unless resuming.")
    var outputDir: String?
    @OptionGroup var checkpointing: CheckpointArguments
    @Flag(name: .long, help: "Start even if the memory plan exceeds this host's MemAvailable.")
    var force = false

    func validate() throws { try checkpointing.validate(outputDir: outputDir) }

    /// `--data` checked before any rank starts, and the evaluation sets. Text is tokenized in slices across
    /// the ranks in the job, unless `--val-fraction` needs every example here to hold some out.
    func resolveData(source: ModelSource, options: TrainingOptions, long: (sequenceLength: Int, policy: LongExamplePolicy))
        throws -> (ResolvedData, [EvaluationSet])
    {
        let vocabularySize = source.config.vocabSize
        guard evaluation.valFraction != nil else {
            let resolved = try text.resolve(data: data, source: source, vocabularySize: vocabularySize, long: long)
            let sets = try evaluation.prepare(training: [], text: text, data: data, source: source,
                                              vocabularySize: vocabularySize, options: options).sets
            return (resolved, sets)
        }
        var loaded = try text.load(data: data, source: source, vocabularySize: vocabularySize, long: long)
        let (training, sets) = try evaluation.prepare(training: loaded.examples, text: text, data: data, source: source,
                                                      vocabularySize: vocabularySize, options: options)
        loaded.examples = training
        loaded.recordNumbers = []
        return (.loaded(loaded), sets)
    }

    func run() throws {
        // launch/run relays its SIGTERM as SIGUSR1 at any moment, the start-up before MPI_Init included:
        // record it from now on (StopSignals.install), as Job.run does again after MPI_Init.
        if StopSignals.isRelayed { StopSignals.install() }
        try blasOptions.apply()
        let started = Date()
        let source = try modelOptions.resolve()
        let config = source.config
        let options = try training.options()
        try MemoryCheck.require(config: config, options: options, force: force)
        let longExamples = (sequenceLength: options.sequenceLength, policy: long.longExamples)
        let (resume, notes) = try checkpointing.resolve(outputDir: outputDir, layout: ParameterLayout(config: config))
        try OutputOptions.check(outputDir: outputDir, metricsFile: options.metricsFile, inputs: [data, modelOptions.model] + ((try? evaluation.namedPaths().map(\.path)) ?? []),
                                source: source, resuming: checkpointing.resume != nil)
        let (resolved, evaluationSets) = try resolveData(source: source, options: options, long: longExamples)
        let saveEvery = checkpointing.saveEvery, keepLast = checkpointing.keepLast
        let fault = try FaultInjection.fromEnvironment()  // a test hook (docs/testing.md)
        collectives.prepareProcess()
        Job.runReturningExitCode { (communicator: Communicator) throws -> Int32 in
            StopSignals.install()
            try collectives.apply(to: communicator, checkingConsistency: options.debug)
            Session.warn(source)
            let logger = Session.logger("train")
            communicator.context = "data"
            let (examples, report) = try text.examples(resolved, communicator: communicator)
            let dataReady = Date()
            logger.info("data file: \(report.summary)\(resolved.isPrepared ? " (prepared token file, memory-mapped)" : "")")
            for set in evaluationSets {
                let origin = set.name == EvaluationSet.validationName && evaluation.valFraction != nil ? " (held out from --data)" : ""
                logger.info("eval set \(set.name): \(set.examples.count) examples\(origin)")
            }
            let checkpointLogger = Session.logger("checkpoint")
            for note in notes { checkpointLogger.info("\(note)") }
            var initialize: ((Int, Range<Int>, UnsafeMutableBufferPointer<Float>) throws -> Void)? = nil
            if let resume {
                let started = Date()
                let bytes = try communicator.allReduce(Int64(resume.verify(communicator: communicator)), .sum)
                checkpointLogger.info(.init(stringLiteral: "resuming from \(resume.directory.path): step \(resume.step), saved by "
                    + "\(resume.reader.manifest.ranks) rank(s) at ZeRO stage \(resume.reader.manifest.stage); "
                    + String(format: "%d file(s), %.1f MB verified (xxh64) in %.2f s", resume.reader.manifest.shards.count,
                             Double(bytes) / 1e6, Date().timeIntervalSince(started))))
                initialize = resume.parameterInitializer(layout: ParameterLayout(config: config))
            }
            let loadStarted = Date()
            let trainer = try Session.makeTrainer(source: source, options: options, communicator: communicator,
                                                  examples: examples, initialize: initialize)
            trainer.evaluator = evaluation.evaluator(sets: evaluationSets, options: options)
            trainer.fault = fault
            for warning in TrainingArguments.ignoredSettings(options, totalSteps: trainer.totalSteps) { logger.warning(.init(stringLiteral: warning)) }
            logger.info(.init(stringLiteral: String(format: "start-up: %.2f s to the first step (data ready at %.2f s)",
                                                    Date().timeIntervalSince(started), dataReady.timeIntervalSince(started))))
            if let resume {
                try resume.restore(into: trainer)
                try communicator.barrier()
                let next = trainer.startStep < trainer.totalSteps
                    ? "next step \(trainer.startStep + 1) of \(trainer.totalSteps)"
                    : "step \(trainer.startStep) was the run's last (of \(trainer.totalSteps)): nothing left to train (raise --max-steps to continue)"
                checkpointLogger.info(.init(stringLiteral: String(format: "restored parameters and AdamW moments in %.2f s; ",
                                                                  Date().timeIntervalSince(loadStarted)) + next))
            }
            let saver = outputDir.map { directory in
                let saver = CheckpointSaver(outputDirectory: URL(fileURLWithPath: directory), keepLast: keepLast, logger: checkpointLogger) { folder in
                    try ModelExport.writeConfig(config, to: folder)
                    return ["config.json"] + (try ModelExport.writeSidecars(from: source, config: config, to: folder))
                }
                saver.fault = fault
                return saver
            }
            let outcome = try trainer.train(stopRequest: { StopSignals.received }) { completed in
                if let saver, let saveEvery, completed % saveEvery == 0 { try saver.save(trainer) }
            }
            if case .stopped(let signal) = outcome {
                // A stop on SIGTERM/SIGINT saves a checkpoint (every rank; rank 0 says where) and exits 128 + signal.
                return try Session.stop(trainer, signal: signal) { trainer in
                    guard let saver else { return nil }
                    let savedNow = saver.lastSavedStep != trainer.completedSteps && trainer.completedSteps > trainer.startStep
                    if savedNow { try saver.save(trainer) }
                    return (URL(fileURLWithPath: outputDir ?? "").appendingPathComponent(
                        TrainingCheckpointFormat.directoryName(step: trainer.completedSteps)).path, savedNow)
                }
            }
            // Always a checkpoint at the end (unless this process ran no step: the one it resumed from is it).
            if let saver, saver.lastSavedStep != trainer.completedSteps, trainer.completedSteps > trainer.startStep || resume == nil {
                try saver.save(trainer)
            }
            if let outputDir {
                let directory = URL(fileURLWithPath: outputDir)
                try ModelCheckpoint.save(engine: trainer.engine, config: config, to: directory, overwrite: resume != nil)
                if communicator.rank == 0 { try ModelExport.writeSidecars(from: source, config: config, to: directory) }
            }
            return 0
        }
    }
}

/// Where `train` writes, checked before any rank starts work.
enum OutputOptions {
    /// `--output-dir` (``OutputCheck/outputDirectory(_:needs:resuming:)``, warnings printed) and `--metrics-file`
    /// (``OutputCheck/metricsFile(_:inputs:resuming:)``: never one of `inputs`, an existing one only when `resuming`).
    static func check(outputDir: String?, metricsFile: String?, inputs: [String], source: ModelSource, resuming: Bool) throws {
        if let outputDir {
            let parameters = ParameterLayout(config: source.config).parameterCount
            let needs = OutputCheck.SpaceNeeds(parameterCount: parameters, sidecarBytes: sidecarBytes(source))
            for warning in try OutputCheck.outputDirectory(outputDir, needs: needs, resuming: resuming) {
                warnOnce(warning)
            }
        }
        // Rank 0 alone writes the metrics file, and alone checks it (another rank's probe would be "an existing file").
        if let metricsFile, launcherRank == "0" {
            try OutputCheck.metricsFile(metricsFile, inputs: inputs, resuming: resuming)
        }
    }

    /// This process's rank as the launcher announced it, "0" without a launcher.
    static var launcherRank: String {
        let environment = ProcessInfo.processInfo.environment
        return ["OMPI_COMM_WORLD_RANK", "PMIX_RANK", "PMI_RANK"].lazy.compactMap { environment[$0] }.first ?? "0"
    }

    /// A warning before MPI starts, printed by the launcher's rank 0 only (or the only process), like
    /// ``RankLogHandler``'s: `zero-sft: warning: …` on stderr.
    static func warnOnce(_ message: String) {
        guard launcherRank == "0" else { return }
        FileHandle.standardError.write(Data("zero-sft: warning: \(message)\n".utf8))
    }

    /// The bytes of the tokenizer and generation files an HF export copies (16 MiB for a GGUF's rebuilt ones).
    static func sidecarBytes(_ source: ModelSource) -> Int {
        if source.gguf != nil { return 16 << 20 }
        guard let files = source.files else { return 0 }
        return (ModelExport.tokenizerFileNames + ["generation_config.json"]).reduce(0) { total, name in
            guard files.contains(name),
                  let size = try? FileManager.default.attributesOfItem(atPath: files.url(name).path)[.size] as? Int else { return total }
            return total + size
        }
    }
}
