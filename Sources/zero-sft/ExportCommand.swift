import ArgumentParser
import Foundation
import ModelIO
import Models
import Training

struct ExportCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "export",
        abstract: "Write the model as an HF directory that transformers loads (config.json, model.safetensors in F32, generation_config.json, tokenizer files).",
        discussion: """
            From a GGUF, the weights are dequantised (llama.cpp's q/k row permutation undone) and the \
            tokenizer.json / tokenizer_config.json (with the chat template) are rebuilt from the GGUF metadata; \
            from an HF directory, the tokenizer files are copied. Tensors are streamed one chunk at a time.
            """)

    @OptionGroup var modelOptions: ModelOptions
    @Option(name: .long, help: "The directory to create (refuses an existing non-empty one).")
    var out: String
    @Option(name: .long, help: "Seed of the random initialisation (presets only).")
    var seed: UInt64 = 42

    func run() throws {
        let source = try modelOptions.resolve()
        Session.warn(source)
        let started = Date()
        let files = try ModelExport.export(source, seed: seed, to: URL(fileURLWithPath: out))
        print(String(format: "exported %@ (%.2fM parameters) to %@ in %.2f s: %@", source.location,
                     Double(source.config.parameterCount) / 1e6, out, Date().timeIntervalSince(started), files.joined(separator: ", ")))
    }
}
