import ArgumentParser
import Foundation
import Kernels

extension BLAS.Library: ExpressibleByArgument {}

/// Which BLAS library runs the gemms: the option of every command that trains or evaluates.
struct BLASOptions: ParsableArguments {
    @Option(name: .long, help: ArgumentHelp(
        "The library for every gemm: openblas (linked, the default), blis (libblis-dev) or onednn (libdnnl-dev), opened at run time.",
        discussion: "Without the option, the environment variable ZERO_SFT_BLAS names it. Threads follow OPENBLAS_NUM_THREADS for every library. Compare them on this CPU with `zero-sft bench-gemm`.",
        valueName: "openblas|blis|onednn"))
    var blas: BLAS.Library?

    /// `--blas`, else `ZERO_SFT_BLAS`, else OpenBLAS.
    func library() throws -> BLAS.Library {
        if let blas { return blas }
        guard let name = ProcessInfo.processInfo.environment["ZERO_SFT_BLAS"], !name.isEmpty else { return .openblas }
        guard let library = BLAS.Library(rawValue: name) else {
            throw ValidationError("ZERO_SFT_BLAS=\(name): expected one of \(BLAS.Library.allCases.map(\.rawValue).joined(separator: ", "))")
        }
        return library
    }

    func validate() throws { _ = try library() }

    /// Opens the chosen library and sends every gemm to it; call before any rank starts work.
    /// - Throws: `BLAS.LibraryError` naming the library, its package and what the loader said.
    func apply() throws {
        let library = try library()
        if library != .openblas { try BLAS.select(library) }
    }
}
