import ArgumentParser
import Foundation
import Kernels

extension BLAS.Precision: ExpressibleByArgument {}

/// What `--blas` accepts: a library, or `auto` (``BLAS/automaticLibrary(cpuinfo:)``).
enum BLASChoice: String, CaseIterable, ExpressibleByArgument {
    case auto, openblas, blis, onednn
}

/// Which BLAS library runs the gemms, and in which precision: the options of every command that
/// trains or evaluates.
struct BLASOptions: ParsableArguments {
    /// What `--blas` defaults to when neither the option nor `ZERO_SFT_BLAS` names a library.
    static let defaultChoice = BLASChoice.auto

    @Option(name: .long, help: ArgumentHelp(
        "The library for every gemm: auto (the default: onednn where the CPU has AVX-512 and oneDNN is installed, else openblas), openblas (linked), blis (libblis-dev) or onednn (libdnnl-dev), opened at run time.",
        discussion: "Without the option, the environment variable ZERO_SFT_BLAS names it. Threads follow OPENBLAS_NUM_THREADS for every library. Compare them on this CPU with `zero-sft bench-gemm`.",
        valueName: "openblas|blis|onednn|auto"))
    var blas: BLASChoice?

    @Option(name: .long, help: ArgumentHelp(
        "The gemms' operand precision: fp32 (the default) or bf16 (both operands rounded to bf16, fp32 sums and outputs; oneDNN, CPUs with avx512_bf16).",
        discussion: "Weights, gradients, AdamW moments, norms, softmax and the loss stay fp32 (fp32 master weights): bf16 is PyTorch's autocast for matmuls, with fp32 outputs. Refused at start-up where the CPU lacks avx512_bf16 or oneDNN (libdnnl-dev) is missing.",
        valueName: "fp32|bf16"))
    var precision: BLAS.Precision = .fp32

    /// `--blas`, else `ZERO_SFT_BLAS`, else ``defaultChoice``.
    func choice() throws -> BLASChoice {
        if let blas { return blas }
        guard let name = ProcessInfo.processInfo.environment["ZERO_SFT_BLAS"], !name.isEmpty else { return Self.defaultChoice }
        guard let choice = BLASChoice(rawValue: name) else {
            throw ValidationError("ZERO_SFT_BLAS=\(name): expected one of \(BLASChoice.allCases.map(\.rawValue).joined(separator: ", "))")
        }
        return choice
    }

    /// The library the choice names, `auto` resolved on this host.
    func library() throws -> BLAS.Library {
        switch try choice() {
        case .auto: BLAS.automaticLibrary()
        case .openblas: .openblas
        case .blis: .blis
        case .onednn: .onednn
        }
    }

    func validate() throws { _ = try choice() }

    /// Opens the chosen library and sends every gemm to it, in the chosen precision; call before any
    /// rank starts work.
    /// - Throws: `BLAS.LibraryError` naming the library, its package and what the loader said;
    ///   `BLAS.PrecisionError` when bf16 cannot run here.
    func apply() throws {
        let library = try library()
        if library != .openblas { try BLAS.select(library) }
        if precision != .fp32 { try BLAS.select(precision: precision) }
    }
}
