// swift-tools-version: 6.1
import PackageDescription

// The library targets are compiled for AVX2 + FMA (`-target-cpu haswell`: x86-64-v3's extensions),
// which every CPU this project runs on has (AMD Zen 1 and later, Intel Haswell and later): Swift's
// SIMD8/SIMD16 kernels (softmax and SwiGLU exps, AdamW, the ring's additions) then run in 256-bit
// registers instead of two 128-bit SSE halves. Swift never contracts `a * b + c` into an FMA, so
// the results are bitwise those of the baseline build (a SmolLM2 run's checkpoint compared byte for
// byte). The executable target stays baseline and checks the CPU's flags before any library code
// runs (`CPUFeatures`), so an older CPU gets a message instead of SIGILL. docs/benchmarks.md has the
// before/after figures.
#if arch(x86_64)
let vectorISA: [SwiftSetting] = [.unsafeFlags(["-target-cpu", "haswell"])]
#else
let vectorISA: [SwiftSetting] = []
#endif

let package = Package(
    name: "zero-sft",
    products: [
        .executable(name: "zero-sft", targets: ["zero-sft"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.6.0"),
        .package(url: "https://github.com/apple/swift-system", from: "1.4.0"),
    ],
    targets: [
        // C edges: only Collectives and Kernels import these.
        .systemLibrary(
            name: "CMPI", pkgConfig: "ompi-c",
            providers: [.apt(["libopenmpi-dev", "openmpi-bin"])]),
        .systemLibrary(
            name: "COpenBLAS", pkgConfig: "openblas",
            providers: [.apt(["libopenblas-dev"])]),

        // Baseline x86-64: read before any AVX2 code runs.
        .target(name: "CPUFeatures"),
        .target(name: "Collectives", dependencies: [
            "CMPI",
            .product(name: "Logging", package: "swift-log"),
            .product(name: "SystemPackage", package: "swift-system"),
        ], swiftSettings: vectorISA),
        .target(name: "Kernels", dependencies: ["COpenBLAS", "CPUFeatures"], swiftSettings: vectorISA),
        .target(name: "Checkpoints", dependencies: [.product(name: "SystemPackage", package: "swift-system")], swiftSettings: vectorISA),
        .target(name: "Tokenizers", dependencies: ["Checkpoints"], swiftSettings: vectorISA),
        .target(name: "Models", dependencies: ["Kernels"], swiftSettings: vectorISA),
        // What `--model` names, resolved once per process: config, checked weights, tokenizer files.
        .target(name: "ModelIO", dependencies: ["Models", "Checkpoints", "Tokenizers"], swiftSettings: vectorISA),
        .target(name: "Sharding", dependencies: ["Collectives", "Kernels", "Models"], swiftSettings: vectorISA),
        .target(name: "Training", dependencies: ["Collectives", "Kernels", "Models", "ModelIO", "Sharding", "Checkpoints", "Tokenizers",
                                                .product(name: "Logging", package: "swift-log"),
                                                .product(name: "SystemPackage", package: "swift-system")], swiftSettings: vectorISA),
        .executableTarget(
            name: "zero-sft",
            dependencies: [
                "CPUFeatures", "Training", "Collectives", "Models", "ModelIO", "Sharding", "Kernels", "Checkpoints", "Tokenizers",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ]),

        // Test-only helpers: find the built zero-sft binary and run it under mpirun with a timeout.
        .target(name: "TestSupport"),

        .testTarget(name: "CollectivesTests", dependencies: ["Collectives", "TestSupport"]),
        .testTarget(name: "KernelsTests", dependencies: ["Kernels", "CPUFeatures", "TestSupport"], resources: [.copy("Fixtures")]),
        .testTarget(name: "CheckpointsTests", dependencies: ["Checkpoints"], resources: [.copy("Fixtures")]),
        .testTarget(name: "TokenizersTests", dependencies: ["Tokenizers", "Checkpoints"], resources: [.copy("Fixtures")]),
        .testTarget(name: "ModelsTests", dependencies: ["Models", "Kernels", "Checkpoints", "TestSupport"], resources: [.copy("Fixtures")]),
        .testTarget(name: "ModelIOTests", dependencies: ["ModelIO", "Models", "Kernels", "Checkpoints", "Tokenizers", "Training", "TestSupport"],
                    resources: [.copy("Fixtures")]),
        .testTarget(name: "TrainingTests", dependencies: ["Training", "Sharding", "Models", "Collectives", "Checkpoints", "TestSupport"],
                    exclude: ["Fixtures"]),
        .testTarget(name: "ChatDataTests", dependencies: ["Training", "ModelIO", "Tokenizers", "Checkpoints", "TestSupport"], resources: [.copy("Fixtures")]),
    ]
)
