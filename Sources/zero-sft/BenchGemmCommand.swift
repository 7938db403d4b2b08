import ArgumentParser
import CPUFeatures
import Foundation
import Kernels
import Models

/// Times each BLAS library on the gemm shapes of one training step, alternating libraries.
struct BenchGemmCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench-gemm",
        abstract: "Compare BLAS libraries (OpenBLAS, BLIS, oneDNN) on the model's own gemm shapes and print GFLOP/s per shape per library.",
        discussion: """
            Every shape of one training step (forward NT, input-gradient NN, weight-gradient TN, fused q|k|v and gate|up, \
            classifier chunks, attention blocks) is timed in rounds that alternate the libraries (A B C A B C ...); \
            the median of the rounds is printed, with the gemm seconds of one step (calls per step × time). \
            OpenBLAS's kernel set follows OPENBLAS_CORETYPE (read when the process starts: launch/bench-gemm runs one process per core type). \
            The last line is one JSON object.
            """)

    @Option(name: .long, help: "The model preset whose shapes are timed.") var preset = "smollm2-135m"
    @Option(name: .long, help: "Rows per micro-batch (as bench).") var microBatchSize = 4
    @Option(name: .long, help: "Tokens per row (as bench).") var seqLen = 256
    @Option(name: .long, help: "Fraction of positions with a label (sets the classifier chunks per step).") var supervisedFraction = 0.5
    @Option(name: .long, help: ArgumentHelp("Libraries to compare, comma-separated (default: every one installed).", valueName: "openblas,blis,onednn"))
    var blas: String?
    @Option(name: .long, help: ArgumentHelp("Thread counts, comma-separated.", valueName: "1,2")) var threads = "1,2"
    @Option(name: .long, help: "Rounds per shape; each round times every library once.") var rounds = 3
    @Option(name: .long, help: "Minimum seconds of one timing (repeats the gemm until reached).") var minSeconds = 0.1
    @Option(name: .long, help: "Time only the shapes whose name contains this text.") var only: String?
    @Option(name: .long, help: ArgumentHelp("Also time `--precision bf16`'s gemm (operands rounded to bf16 on every call, as in training, then oneDNN's dnnl_gemm_bf16bf16f32): auto (where the CPU and oneDNN allow it), yes or no.", valueName: "auto|yes|no"))
    var bf16 = "auto"

    func libraries() throws -> [BLAS.Library]? {
        guard let blas else { return nil }
        return try blas.split(separator: ",").map { name in
            guard let library = BLAS.Library(rawValue: String(name)) else {
                throw ValidationError("--blas: unknown library '\(name)' (expected \(BLAS.Library.allCases.map(\.rawValue).joined(separator: ", ")))")
            }
            return library
        }
    }

    func threadCounts() throws -> [Int] {
        try threads.split(separator: ",").map { text in
            guard let n = Int(text), (1...1024).contains(n) else { throw ValidationError("--threads: '\(text)' is not a thread count in [1, 1024]") }
            return n
        }
    }

    func validate() throws {
        _ = try libraries()
        _ = try threadCounts()
        guard ModelPreset.config(named: preset) != nil else {
            throw ValidationError("--preset: unknown preset '\(preset)' (expected one of \(ModelPreset.all.map(\.name).joined(separator: ", ")))")
        }
        guard (1...4096).contains(microBatchSize), (2...65536).contains(seqLen) else {
            throw ValidationError("--micro-batch-size must be in [1, 4096] and --seq-len in [2, 65536]")
        }
        guard supervisedFraction > 0, supervisedFraction <= 1 else { throw ValidationError("--supervised-fraction must be in (0, 1]") }
        guard (1...100).contains(rounds) else { throw ValidationError("--rounds must be in [1, 100] (got \(rounds))") }
        guard minSeconds > 0, minSeconds <= 60 else { throw ValidationError("--min-seconds must be in (0, 60] (got \(minSeconds))") }
        guard ["auto", "yes", "no"].contains(bf16) else { throw ValidationError("--bf16 must be auto, yes or no (got '\(bf16)')") }
    }

    /// One column of the table: a library's sgemm, or the bf16 gemm with its rounding.
    struct Variant {
        var name: String
        var details: String
        var setThreads: (Int) -> Void
        var gemm: (GemmShape, UnsafePointer<Float>, UnsafePointer<Float>, UnsafeMutablePointer<Float>) -> Void
    }

    func run() throws {
        guard let config = ModelPreset.config(named: preset) else { return }
        let threadCounts = try threadCounts()
        var backends: [BLAS.Backend] = []
        if let asked = try libraries() {
            backends = try asked.map { try BLAS.Backend.load($0) }
        } else {
            for library in BLAS.Library.allCases {
                do { backends.append(try BLAS.Backend.load(library)) } catch { print("skipped: \(error)") }
            }
        }
        var variants = backends.map { backend in
            Variant(name: backend.library.rawValue, details: backend.details, setThreads: backend.setThreads) { shape, a, b, c in
                backend.gemm(transposeA: shape.transposeA, transposeB: shape.transposeB, m: shape.m, n: shape.n, k: shape.k,
                             a: a, lda: shape.lda, b: b, ldb: shape.ldb, c: c, ldc: shape.ldc)
            }
        }
        if bf16 != "no" {
            do {
                let gemm = try BLAS.loadBF16Gemm()
                variants.append(Variant(name: "bf16", details: "\(gemm.details): dnnl_gemm_bf16bf16f32, operands rounded on every call",
                                        setThreads: gemm.setThreads) { shape, a, b, c in
                    gemm.gemm(transposeA: shape.transposeA, transposeB: shape.transposeB, m: shape.m, n: shape.n, k: shape.k, alpha: 1,
                              a: a, lda: shape.lda, b: b, ldb: shape.ldb, beta: 0, c: c, ldc: shape.ldc)
                })
            } catch {
                if bf16 == "yes" { throw error }
                print("skipped bf16: \(error)")
            }
        }
        let tokens = microBatchSize * seqLen
        var shapes = GemmShape.training(
            tokens: tokens, hiddenSize: config.hiddenSize, intermediateSize: config.intermediateSize,
            queryWidth: config.numAttentionHeads * config.headDimension, keyValueWidth: config.numKeyValueHeads * config.headDimension,
            vocabularySize: config.vocabSize, layers: config.numHiddenLayers, queryHeads: config.numAttentionHeads,
            headDimension: config.headDimension, sequenceLength: seqLen, supervisedRows: Int(Double(tokens) * supervisedFraction))
        if let only { shapes = shapes.filter { $0.name.contains(only) } }

        let cpu = CPUDescription.current
        print("CPU: \(cpu.model) (\(cpu.logicalCores) logical cores); extensions: \(cpu.extensions.joined(separator: " "))")
        for variant in variants { print("\(variant.name): \(variant.details)") }
        print("shapes: \(preset), \(microBatchSize) × \(seqLen) tokens; median of \(rounds) rounds, libraries alternating")

        var results: [[String: String]] = []
        for threadCount in threadCounts {
            print("\n\(threadCount) thread\(threadCount == 1 ? "" : "s"): GFLOP/s")
            let names = variants.map { $0.name.padding(toLength: 9, withPad: " ", startingAt: 0) }
            print("shape".padding(toLength: 22, withPad: " ", startingAt: 0) + " form " + "m × n × k".padding(toLength: 19, withPad: " ", startingAt: 0)
                  + names.joined(separator: " "))
            var stepSeconds = [Double](repeating: 0, count: variants.count)
            for shape in shapes {
                let seconds = Self.time(shape, variants: variants, threads: threadCount, rounds: rounds, minSeconds: minSeconds)
                let rates = seconds.map { shape.flops / $0 / 1e9 }
                let best = rates.max() ?? 0
                let cells = rates.map { String(format: "%8.1f%@", $0, $0 == best && rates.count > 1 ? "*" : " ") }
                print(shape.name.padding(toLength: 22, withPad: " ", startingAt: 0) + " \(shape.form)   "
                      + "\(shape.m) × \(shape.n) × \(shape.k)".padding(toLength: 19, withPad: " ", startingAt: 0) + cells.joined(separator: " "))
                for (i, variant) in variants.enumerated() {
                    stepSeconds[i] += Double(shape.callsPerStep) * seconds[i]
                    results.append(["shape": shape.name, "form": shape.form, "m": "\(shape.m)", "n": "\(shape.n)", "k": "\(shape.k)",
                                    "calls_per_step": "\(shape.callsPerStep)", "threads": "\(threadCount)",
                                    "library": variant.name, "gflops": String(format: "%.2f", rates[i])])
                }
            }
            let summary = zip(variants, stepSeconds).map { String(format: "%@ %.3f s", $0.name, $1) }
            print("gemm seconds per step (unfused shapes × calls per step; attention at full width): " + summary.joined(separator: ", "))
            for (variant, seconds) in zip(variants, stepSeconds) {
                results.append(["shape": "step", "threads": "\(threadCount)", "library": variant.name,
                                "step_gemm_seconds": String(format: "%.4f", seconds)])
            }
        }
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        let object: [String: [[String: String]]] = [
            "cpu": [["model": cpu.model, "extensions": cpu.extensions.joined(separator: " "), "openblas_core": BLAS.openBLASCore]],
            "results": results,
        ]
        print(String(decoding: try encoder.encode(object), as: UTF8.self))
    }

    /// Seconds per call of `shape` for each backend: in each round every backend runs in turn (its
    /// own warm-up call, then repeats until `minSeconds`); the median over rounds.
    static func time(_ shape: GemmShape, variants: [Variant], threads: Int, rounds: Int, minSeconds: Double) -> [Double] {
        let a = FloatBuffer(count: shape.aCount), b = FloatBuffer(count: shape.bCount), c = FloatBuffer(count: shape.cCount)
        for i in 0..<a.count { a.pointer[i] = Float(i % 13) * 0.01 - 0.06 }
        for i in 0..<b.count { b.pointer[i] = Float(i % 7) * 0.01 - 0.03 }
        var samples = [[Double]](repeating: [], count: variants.count)
        for _ in 0..<rounds {
            for (i, variant) in variants.enumerated() {
                variant.setThreads(threads)
                BLAS.threadCount = threads   // the bf16 rounding splits rows over the rank's threads
                func call() { variant.gemm(shape, a.pointer.baseAddress!, b.pointer.baseAddress!, c.pointer.baseAddress!) }
                call()
                var calls = 0
                let start = DispatchTime.now().uptimeNanoseconds
                var elapsed = 0.0
                repeat {
                    call()
                    calls += 1
                    elapsed = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
                } while elapsed < minSeconds
                samples[i].append(elapsed / Double(calls))
            }
        }
        return samples.map { $0.sorted()[$0.count / 2] }
    }
}

/// The CPU's model name and the vector extensions that matter to gemm kernels, from `/proc/cpuinfo`.
struct CPUDescription {
    var model: String
    var extensions: [String]
    var logicalCores: Int

    static var current: CPUDescription {
        let info = CPUInfo.current() ?? CPUInfo(text: "")
        let flags = (info.field("flags") ?? "").split(separator: " ").map(String.init)
        let family = info.field("cpu family").map { " (family \($0) model \(info.field("model") ?? "?"))" } ?? ""
        let wanted = flags.filter { $0 == "avx" || $0 == "avx2" || $0 == "fma" || $0.hasPrefix("avx512") || $0.hasPrefix("amx") || $0 == "avx_vnni" }
        return CPUDescription(model: (info.field("model name") ?? "unknown") + family, extensions: wanted, logicalCores: ProcessInfo.processInfo.activeProcessorCount)
    }
}
