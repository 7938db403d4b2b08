// swift-tools-version: 6.1
import PackageDescription

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

        .target(name: "Collectives", dependencies: [
            "CMPI",
            .product(name: "Logging", package: "swift-log"),
            .product(name: "SystemPackage", package: "swift-system"),
        ]),
        .target(name: "Kernels", dependencies: ["COpenBLAS"]),
        .target(name: "Checkpoints", dependencies: [.product(name: "SystemPackage", package: "swift-system")]),
        .target(name: "Tokenizers", dependencies: ["Checkpoints"]),
        .target(name: "Models", dependencies: ["Kernels"]),
        // What `--model` names, resolved once per process: config, checked weights, tokenizer files.
        .target(name: "ModelIO", dependencies: ["Models", "Checkpoints", "Tokenizers"]),
        .target(name: "Sharding", dependencies: ["Collectives", "Kernels", "Models"]),
        .target(name: "Training", dependencies: ["Collectives", "Kernels", "Models", "ModelIO", "Sharding", "Checkpoints", "Tokenizers",
                                                .product(name: "Logging", package: "swift-log"),
                                                .product(name: "SystemPackage", package: "swift-system")]),
        .executableTarget(
            name: "zero-sft",
            dependencies: [
                "Training", "Collectives", "Models", "ModelIO", "Sharding", "Kernels", "Checkpoints", "Tokenizers",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ]),

        // Test-only helpers: find the built zero-sft binary and run it under mpirun with a timeout.
        .target(name: "TestSupport"),

        .testTarget(name: "CollectivesTests", dependencies: ["Collectives", "TestSupport"]),
        .testTarget(name: "KernelsTests", dependencies: ["Kernels", "TestSupport"], resources: [.copy("Fixtures")]),
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
