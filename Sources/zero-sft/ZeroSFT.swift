import ArgumentParser
import CPUFeatures
import Foundation

@main
struct ZeroSFT: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "zero-sft",
        abstract: "ZeRO-sharded supervised fine-tuning of decoder-only language models on CPUs.",
        subcommands: [DemoCommand.self, TrainCommand.self, EvalCommand.self, GenerateCommand.self, ChatCommand.self, ExportCommand.self,
                      TokenizeCommand.self, InspectDataCommand.self, PlotCommand.self, PrepareCommand.self, BenchCommand.self, BenchGemmCommand.self, PlanCommand.self, SelfTestCommand.self],
        defaultSubcommand: DemoCommand.self)

    /// Parses the strictly decoded arguments with negative option values joined (`--lr -1` → `--lr=-1`),
    /// so a negative number reaches the option's range check instead of "Missing value".
    static func main() {
        // First, before any library code (built for AVX2 + FMA) runs: see Package.swift's `vectorISA`.
        let missing = CPUFeatures.missingForLibraries()
        if !missing.isEmpty {
            FileHandle.standardError.write(Data(("zero-sft: this build needs a CPU with AVX2 and FMA; this CPU's /proc/cpuinfo flags lack "
                + missing.joined(separator: ", ") + ". Build for the baseline instead: remove `vectorISA`'s -target-cpu flag from Package.swift.\n").utf8))
            Foundation.exit(1)
        }
        let arguments: [String]
        do { arguments = try CommandLineBytes.arguments() } catch { exit(withError: error) }
        main(CommandLineBytes.joiningNegativeValues(arguments))
    }
}
