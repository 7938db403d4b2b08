import ArgumentParser
import Sharding
import Training

/// `--zero-stage 0|1|2|3`: parsed by swift-argument-parser from the raw value, so an invalid stage is
/// its standard error naming the option and the valid values (help lists them too).
extension ZeroStage: ExpressibleByArgument {
    public var defaultValueDescription: String { String(rawValue) }
}

/// `--chat-template NAME`: one of ``ChatTemplate/all`` (`smollm2`, `qwen2`, `chatml`, `llama3`, `plain`).
extension ChatTemplate: ExpressibleByArgument {
    public init?(argument: String) {
        guard let template = try? ChatTemplate.named(argument) else { return nil }
        self = template
    }

    public static var allValueStrings: [String] { all.map(\.name) }
    public var defaultValueDescription: String { name }
}

/// `--packing bfd|greedy|none`.
extension PackingMethod: ExpressibleByArgument {}

/// `--long-examples truncate|split|drop|error`.
extension LongExamplePolicy: ExpressibleByArgument {}

/// `--param-dtype fp32|bf16` (``ParameterDType``).
extension ParameterDType: ExpressibleByArgument {}
