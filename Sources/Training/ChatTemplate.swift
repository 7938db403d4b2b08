/// One message of a conversation, as in OpenAI's and HF's `messages` lists.
public struct ChatMessage: Sendable, Equatable, Codable {
    /// The roles a conversation may contain (tool calls are not supported).
    public enum Role: String, Sendable, Equatable, Codable, CaseIterable {
        case system, user, assistant
    }

    public var role: Role
    public var content: String

    public init(role: Role, content: String) {
        self.role = role
        self.content = content
    }

    public static func system(_ content: String) -> ChatMessage { ChatMessage(role: .system, content: content) }
    public static func user(_ content: String) -> ChatMessage { ChatMessage(role: .user, content: content) }
    public static func assistant(_ content: String) -> ChatMessage { ChatMessage(role: .assistant, content: content) }
}

/// A chat template the model's text is laid out with: how messages become one string, and which part of
/// it each assistant turn is (its content and its end-of-turn token, the part trained by default).
///
/// The templates are native renderers of the Jinja templates models ship with, checked against
/// transformers' `apply_chat_template` (tools/generate_chat_fixtures.py):
/// - `smollm2`: ChatML with SmolLM2's default system prompt, inserted when the conversation has none;
/// - `qwen2`: ChatML with Qwen2-Instruct's default system prompt ("You are a helpful assistant.");
/// - `chatml`: ChatML without a default system prompt;
/// - `llama3`: Meta Llama 3 Instruct (`<|begin_of_text|>`, headers, `<|eot_id|>`, contents trimmed);
/// - `plain`: no markup, messages concatenated; an assistant turn ends with the tokenizer's EOS token.
///   Meant for prompt/completion data and base models.
public struct ChatTemplate: Sendable, Equatable, CustomStringConvertible {
    /// The layout family.
    public enum Style: String, Sendable, Equatable {
        case chatML, llama3, plain
    }

    /// The name `--chat-template` takes.
    public var name: String
    public var style: Style
    /// Inserted as a first system message when the conversation does not start with one (ChatML only).
    public var defaultSystemPrompt: String?
    /// How the template was chosen, for logs: "by name", "exact match of the model's template",
    /// "the model's template, recognised by its ChatML markers".
    public var origin: String = "by name"

    public init(name: String, style: Style, defaultSystemPrompt: String? = nil) {
        self.name = name
        self.style = style
        self.defaultSystemPrompt = defaultSystemPrompt
    }

    public var description: String {
        var text = "\(name) (\(origin))"
        if let defaultSystemPrompt { text += ", default system prompt \"\(defaultSystemPrompt)\"" }
        return text
    }

    public static let smolLM2 = ChatTemplate(
        name: "smollm2", style: .chatML,
        defaultSystemPrompt: "You are a helpful AI assistant named SmolLM, trained by Hugging Face")
    public static let qwen2 = ChatTemplate(name: "qwen2", style: .chatML, defaultSystemPrompt: "You are a helpful assistant.")
    public static let chatML = ChatTemplate(name: "chatml", style: .chatML)
    public static let llama3 = ChatTemplate(name: "llama3", style: .llama3)
    public static let plain = ChatTemplate(name: "plain", style: .plain)

    /// Every template `--chat-template` accepts.
    public static let all: [ChatTemplate] = [smolLM2, qwen2, chatML, llama3, plain]

    /// The template called `name` (`smollm2`, `qwen2`, `chatml`, `llama3`, `plain`).
    public static func named(_ name: String) throws(ChatTemplateError) -> ChatTemplate {
        guard let template = all.first(where: { $0.name == name.lowercased() }) else {
            throw ChatTemplateError("unknown chat template \"\(name)\": expected one of \(all.map(\.name).joined(separator: ", "))")
        }
        return template
    }

    // MARK: - Recognising a model's template

    /// The Jinja sources of the templates recognised exactly (whitespace at the ends ignored).
    public static let knownSources: [(source: String, template: ChatTemplate)] = [
        (chatMLSource(defaultSystem: smolLM2.defaultSystemPrompt), smolLM2),
        (chatMLSource(defaultSystem: qwen2.defaultSystemPrompt), qwen2),
        (chatMLSource(defaultSystem: nil), chatML),
        (llama3Source, llama3),
    ]

    /// SmolLM2's and Qwen2-Instruct's template (the same text but for the default system prompt); without
    /// a default, HF's classic ChatML template.
    static func chatMLSource(defaultSystem: String?) -> String {
        if let defaultSystem {
            return "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
                + "{{ '<|im_start|>system\n\(defaultSystem)<|im_end|>\n' }}{% endif %}"
                + "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}"
                + "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
        }
        return "{% for message in messages %}"
            + "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}"
            + "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
    }

    /// Meta-Llama-3-8B-Instruct's template.
    static let llama3Source =
        "{% set loop_messages = messages %}{% for message in loop_messages %}"
        + "{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' %}"
        + "{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}"
        + "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"

    /// The template a model's Jinja chat template stands for.
    ///
    /// Known templates are matched exactly. Others are recognised by their markers when the layout is
    /// unambiguous: a ChatML template (`<|im_start|>`, `<|im_end|>`) is rendered as ChatML, with the default
    /// system prompt it writes as a literal (`'<|im_start|>system\n…<|im_end|>'`), if any. Templates whose
    /// output would differ from these renderers (Llama 3.1's date header, reasoning `<think>` blocks) and
    /// unknown layouts are refused: pass `--chat-template NAME` to choose one explicitly.
    public static func recognize(_ source: String) throws(ChatTemplateError) -> ChatTemplate {
        let trimmed = pythonStrip(source)
        let unescaped = trimmed.replacingOccurrences(of: "\\n", with: "\n")
        for known in knownSources where known.source == trimmed || known.source == unescaped {
            var template = known.template
            template.origin = "exact match of the model's template"
            return template
        }
        let choose = "pass --chat-template with one of \(all.map(\.name).joined(separator: ", ")) to choose the layout"
        if source.contains("<|im_start|>") && source.contains("<|im_end|>") {
            if source.contains("<think>") {
                throw ChatTemplateError(
                    "the model's chat template is ChatML with reasoning (<think>) blocks, which zero-sft does not render; \(choose)")
            }
            var template = ChatTemplate(name: "chatml", style: .chatML, defaultSystemPrompt: literalDefaultSystemPrompt(in: source))
            template.origin = "the model's template, recognised by its ChatML markers"
            return template
        }
        if source.contains("<|start_header_id|>") && source.contains("<|eot_id|>") {
            if source.contains("Cutting Knowledge Date") {
                throw ChatTemplateError(
                    "the model's chat template is Llama 3.1's or later (with a \"Cutting Knowledge Date\" system header), "
                        + "which zero-sft does not render; \(choose) (llama3 is the Llama 3.0 layout)")
            }
            var template = llama3
            template.origin = "the model's template, recognised by its Llama 3 markers"
            return template
        }
        let preview = String(trimmed.prefix(120)).replacingOccurrences(of: "\n", with: "\\n")
        throw ChatTemplateError("unrecognised chat template \"\(preview)\(trimmed.count > 120 ? "…" : "")\"; \(choose)")
    }

    /// The text of `'<|im_start|>system\n…<|im_end|>'` when a template writes it as one string literal.
    static func literalDefaultSystemPrompt(in source: String) -> String? {
        for opener in ["<|im_start|>system\n", "<|im_start|>system\\n"] {
            var searchStart = source.startIndex
            while let open = source.range(of: opener, range: searchStart..<source.endIndex) {
                searchStart = open.upperBound
                guard let close = source.range(of: "<|im_end|>", range: open.upperBound..<source.endIndex) else { break }
                let text = source[open.upperBound..<close.lowerBound]
                if text.contains(where: { "'\"{}+".contains($0) }) { continue }
                return text.replacingOccurrences(of: "\\n", with: "\n")
            }
        }
        return nil
    }

    // MARK: - Rendering

    /// The special-token texts a rendering needs from the tokenizer.
    public struct SpecialTexts: Sendable, Equatable {
        /// Written before the first message by `llama3`.
        public var beginOfText: String
        /// Closes each assistant turn of `plain`.
        public var endOfText: String

        public init(beginOfText: String, endOfText: String) {
            self.beginOfText = beginOfText
            self.endOfText = endOfText
        }
    }

    /// The string a conversation renders to, cut into pieces: prompt text (`assistantTurn == nil`) and the
    /// part of each assistant turn that the model learns, its content and end-of-turn token
    /// (`assistantTurn` = the message's index).
    public struct Rendering: Sendable, Equatable {
        public struct Piece: Sendable, Equatable {
            public var text: String
            /// The index of the assistant message this piece is the trained part of; nil for prompt text.
            public var assistantTurn: Int?
        }

        public var pieces: [Piece]
        /// The UTF-8 offset in `text` where each message's own markup starts (after the BOS and a default
        /// system prompt written before the first message), one per message.
        public var messageStarts: [Int] = []
        public var text: String { pieces.map(\.text).joined() }
    }

    /// Renders `messages` as the model's template does (`apply_chat_template(messages,
    /// add_generation_prompt: addGenerationPrompt)`), with the span of each assistant turn.
    public func render(_ messages: [ChatMessage], addGenerationPrompt: Bool, special: SpecialTexts) -> Rendering {
        var pieces: [Rendering.Piece] = []
        var prompt = ""
        var written = 0, messageStarts: [Int] = []  // UTF-8 bytes in `pieces`; where each message starts
        func assistant(_ text: String, turn: Int) {
            if !prompt.isEmpty { pieces.append(Rendering.Piece(text: prompt, assistantTurn: nil)) }
            pieces.append(Rendering.Piece(text: text, assistantTurn: turn))
            written += prompt.utf8.count + text.utf8.count
            prompt = ""
        }
        func markMessageStart() { messageStarts.append(written + prompt.utf8.count) }
        switch style {
        case .chatML:
            for (index, message) in messages.enumerated() {
                if index == 0, message.role != .system, let defaultSystemPrompt {
                    prompt += "<|im_start|>system\n\(defaultSystemPrompt)<|im_end|>\n"
                }
                markMessageStart()
                prompt += "<|im_start|>\(message.role.rawValue)\n"
                if message.role == .assistant {
                    assistant(message.content + "<|im_end|>", turn: index)
                    prompt = "\n"
                } else {
                    prompt += message.content + "<|im_end|>\n"
                }
            }
            if addGenerationPrompt { prompt += "<|im_start|>assistant\n" }
        case .llama3:
            for (index, message) in messages.enumerated() {
                if index == 0 { prompt += special.beginOfText }
                markMessageStart()
                prompt += "<|start_header_id|>\(message.role.rawValue)<|end_header_id|>\n\n"
                let content = Self.pythonStrip(message.content)
                if message.role == .assistant {
                    assistant(content + "<|eot_id|>", turn: index)
                } else {
                    prompt += content + "<|eot_id|>"
                }
            }
            if addGenerationPrompt { prompt += "<|start_header_id|>assistant<|end_header_id|>\n\n" }
        case .plain:
            for (index, message) in messages.enumerated() {
                markMessageStart()
                if message.role == .assistant {
                    assistant(message.content + special.endOfText, turn: index)
                } else {
                    prompt += message.content
                }
            }
        }
        if !prompt.isEmpty { pieces.append(Rendering.Piece(text: prompt, assistantTurn: nil)) }
        return Rendering(pieces: pieces, messageStarts: messageStarts)
    }

    /// The special tokens the layout writes, which the tokenizer must have as single tokens.
    func requiredTokens(_ special: SpecialTexts) -> [String] {
        switch style {
        case .chatML: ["<|im_start|>", "<|im_end|>"]
        case .llama3: [special.beginOfText, "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]
        case .plain: [special.endOfText]
        }
    }

    /// The token text that ends an assistant turn (generation stops there).
    func endOfTurn(_ special: SpecialTexts) -> String {
        switch style {
        case .chatML: "<|im_end|>"
        case .llama3: "<|eot_id|>"
        case .plain: special.endOfText
        }
    }

    /// Python's `str.strip()` (Jinja's `trim`): removes the characters `str.isspace` accepts, scalar by scalar.
    public static func pythonStrip(_ text: String) -> String {
        let scalars = text.unicodeScalars
        guard let first = scalars.firstIndex(where: { !isPythonSpace($0) }) else { return "" }
        let last = scalars.lastIndex(where: { !isPythonSpace($0) }) ?? first
        return String(scalars[first...last])
    }

    static func isPythonSpace(_ scalar: Unicode.Scalar) -> Bool {
        switch scalar.value {
        case 0x09...0x0D, 0x1C...0x20, 0x85, 0xA0, 0x1680, 0x2000...0x200A, 0x2028, 0x2029, 0x202F, 0x205F, 0x3000: true
        default: false
        }
    }
}

/// A chat template that cannot be used: unknown name, unrecognised model template, or a tokenizer without
/// the template's special tokens.
public struct ChatTemplateError: Error, CustomStringConvertible, Sendable, Equatable {
    public var message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}
