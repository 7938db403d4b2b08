import ArgumentParser

@main
struct ZeroSFT: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "zero-sft",
        abstract: "ZeRO-sharded supervised fine-tuning of decoder-only language models on CPUs.",
        subcommands: [DemoCommand.self, TrainCommand.self, EvalCommand.self, GenerateCommand.self, ChatCommand.self, ExportCommand.self,
                      TokenizeCommand.self, InspectDataCommand.self, BenchCommand.self, PlanCommand.self, SelfTestCommand.self],
        defaultSubcommand: DemoCommand.self)
}
