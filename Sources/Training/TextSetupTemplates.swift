import Foundation
import ModelIO
import Tokenizers

/// The chat template and encoder of a model's ``TextSetup`` (the template types live in this module).
extension TextSetup {
    /// The tokenizer and chat template for `model`: the template named by `chatTemplate` when given
    /// (`smollm2`, `qwen2`, `chatml`, `llama3`, `plain`), else the model's own, recognised.
    public static func resolve(model: String, chatTemplate: String? = nil) throws -> (tokenizer: Tokenizer, template: ChatTemplate) {
        let setup = try load(model: model)
        return (setup.tokenizer, try setup.template(named: chatTemplate))
    }

    /// The encoder for `model` with `chatTemplate` (or the model's own template).
    public static func encoder(model: String, chatTemplate: String? = nil) throws -> ChatEncoder {
        let setup = try load(model: model)
        return try setup.encoder(chatTemplate: chatTemplate)
    }

    /// The chat template called `name`, or the model's own when `name` is nil.
    public func template(named name: String?) throws(ChatTemplateError) -> ChatTemplate {
        if let name { return try ChatTemplate.named(name) }
        guard let chatTemplateSource else {
            throw ChatTemplateError(
                "\(origin) has no chat template; pass --chat-template with one of \(ChatTemplate.all.map(\.name).joined(separator: ", "))")
        }
        return try ChatTemplate.recognize(chatTemplateSource)
    }

    public func encoder(chatTemplate name: String?) throws(ChatTemplateError) -> ChatEncoder {
        try ChatEncoder(tokenizer: tokenizer, template: template(named: name))
    }

    /// The encoder with `chosen` (a `--chat-template` value), or the model's own template when nil.
    public func encoder(template chosen: ChatTemplate?) throws(ChatTemplateError) -> ChatEncoder {
        if let chosen { return try ChatEncoder(tokenizer: tokenizer, template: chosen) }
        return try encoder(chatTemplate: nil)
    }
}
