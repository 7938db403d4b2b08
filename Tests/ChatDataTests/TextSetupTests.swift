import Foundation
import ModelIO
import Testing
import Tokenizers
import Training

/// Finding a model's tokenizer and chat template, and recognising templates.
@Suite struct TextSetupTests {
    /// Runs `body`, which must throw, and returns the error's description.
    static func failure(_ body: () throws -> Void) -> String? {
        do {
            try body()
            return nil
        } catch {
            return "\(error)"
        }
    }

    @Test func presetHasNoTokenizer() throws {
        let message = try #require(Self.failure { _ = try TextSetup.resolve(model: "tiny") })
        #expect(message.hasPrefix("tiny: is a preset (random initialisation) and has no tokenizer"), "\(message)")
    }

    @Test func missingModel() throws {
        let message = try #require(Self.failure { _ = try TextSetup.load(model: "/nonexistent/model") })
        #expect(message.contains("does not exist"), "\(message)")
    }

    /// GPT-2's vocab.json + merges.txt: a tokenizer, no template; text needs --chat-template.
    @Test func vocabAndMergesWithoutTemplate() throws {
        let scratch = try Scratch()
        let gpt2 = ChatFixtures.packageRoot.appendingPathComponent("Tests/TokenizersTests/Fixtures/gpt2")
        for name in ["vocab.json", "merges.txt"] {
            try FileManager.default.copyItem(at: gpt2.appendingPathComponent(name), to: scratch.url.appendingPathComponent(name))
        }
        let setup = try TextSetup.load(model: scratch.url.path)
        #expect(setup.chatTemplateSource == nil)
        #expect(setup.tokenizer.encode("Hello world") == [15496, 995])
        let message = try #require(Self.failure { _ = try setup.template(named: nil) })
        #expect(message.contains("has no chat template; pass --chat-template"), "\(message)")
        // plain works with GPT-2's <|endoftext|> as EOS; ChatML needs tokens GPT-2 does not have.
        let plain = try setup.encoder(chatTemplate: "plain")
        #expect(plain.example([.user("Hi"), .assistant(" there")]).inputIDs == [17250, 612, 50256])
        let chatML = try #require(Self.failure { _ = try setup.encoder(chatTemplate: "chatml") })
        #expect(chatML.contains("writes <|im_start|>, which this tokenizer does not have"), "\(chatML)")
    }

    /// chat_template.jinja wins over tokenizer_config.json; a list of named templates gives "default".
    @Test func templateSources() throws {
        let scratch = try Scratch()
        let qwen = ChatFixtures.url("qwen2-chat")
        try FileManager.default.copyItem(at: qwen.appendingPathComponent("tokenizer.json"), to: scratch.url.appendingPathComponent("tokenizer.json"))
        let llama3 = try #require(ChatFixtures.goldens.templates["llama3"])
        let qwen2 = try #require(ChatFixtures.goldens.templates["qwen2"])
        let list: [String: Any] = ["chat_template": [["name": "tool_use", "template": "x"], ["name": "default", "template": qwen2]]]
        try JSONSerialization.data(withJSONObject: list).write(to: scratch.url.appendingPathComponent("tokenizer_config.json"))
        #expect(try TextSetup.load(model: scratch.url.path).template(named: nil).name == "qwen2")
        try llama3.write(to: scratch.url.appendingPathComponent("chat_template.jinja"), atomically: true, encoding: .utf8)
        #expect(try TextSetup.load(model: scratch.url.path).chatTemplateSource == llama3)
        // config.json in the directory names the same model.
        try "{}".write(to: scratch.url.appendingPathComponent("config.json"), atomically: true, encoding: .utf8)
        #expect(try TextSetup.load(model: scratch.url.appendingPathComponent("config.json").path).chatTemplateSource == llama3)
    }

    @Test func namedTemplates() throws {
        for template in ChatTemplate.all { #expect(try ChatTemplate.named(template.name) == template) }
        let message = try #require(Self.failure { _ = try ChatTemplate.named("vicuna") })
        #expect(message == "unknown chat template \"vicuna\": expected one of smollm2, qwen2, chatml, llama3, plain")
    }

    @Test func recognisedByMarkers() throws {
        // Qwen2.5's template shape: a different default system prompt written as a literal.
        let custom = try #require(ChatFixtures.goldens.templates["qwen2"]).replacingOccurrences(
            of: "You are a helpful assistant.", with: "You are Qwen, created by Alibaba Cloud. You are a helpful assistant.")
            .replacingOccurrences(of: "{% for", with: "{%- for")
        let template = try ChatTemplate.recognize(custom)
        #expect(template.style == .chatML)
        #expect(template.defaultSystemPrompt == "You are Qwen, created by Alibaba Cloud. You are a helpful assistant.")
        #expect(template.origin.contains("recognised by its ChatML markers"))
        // ChatML without a literal default system prompt.
        let bare = "{% for m in messages %}{{ '<|im_start|>' + m.role + '\\n' + m.content + '<|im_end|>\\n' }}{% endfor %}"
        #expect(try ChatTemplate.recognize(bare).defaultSystemPrompt == nil)
        // Llama 3 markers.
        let llama = try ChatTemplate.recognize("{{ bos_token }}{% for m in messages %}<|start_header_id|>{{ m.role }}<|end_header_id|>\n\n{{ m.content | trim }}<|eot_id|>{% endfor %}")
        #expect(llama.style == .llama3)
    }

    @Test func refusedTemplates() throws {
        let llama31 = "{{- bos_token }}{%- set date_string = \"26 Jul 2024\" %}<|start_header_id|>system<|end_header_id|>\n\nCutting Knowledge Date: December 2023<|eot_id|>"
        let message31 = try #require(Self.failure { _ = try ChatTemplate.recognize(llama31) })
        #expect(message31.contains("Llama 3.1's or later") && message31.contains("--chat-template"), "\(message31)")
        let think = "<|im_start|>assistant\n<think>\n\n</think>\n\n<|im_end|>"
        #expect(try #require(Self.failure { _ = try ChatTemplate.recognize(think) }).contains("reasoning"))
        let vicuna = "{% for message in messages %}USER: {{ message['content'] }} ASSISTANT:{% endfor %}"
        let message = try #require(Self.failure { _ = try ChatTemplate.recognize(vicuna) })
        #expect(message.hasPrefix("unrecognised chat template \"{% for message in messages %}USER:"), "\(message)")
        #expect(message.hasSuffix("pass --chat-template with one of smollm2, qwen2, chatml, llama3, plain to choose the layout"))
    }

    @Test func pythonStripMatchesPython() {
        #expect(ChatTemplate.pythonStrip(" \t\n\u{0B}\u{0C}\r\u{1C}\u{85}\u{A0}x y\u{2028}\u{3000}") == "x y")
        // A combining mark after a space stays (Python strips scalars, not grapheme clusters).
        #expect(ChatTemplate.pythonStrip(" \u{301}a ") == "\u{301}a")
        #expect(ChatTemplate.pythonStrip("\u{200B}a") == "\u{200B}a", "U+200B is not whitespace in Python")
        #expect(ChatTemplate.pythonStrip("  ") == "")
    }

    /// The real SmolLM2 GGUF: tokenizer from its metadata, template recognised exactly as smollm2, and the
    /// same ids and masks as the goldens made with its tokenizer.json.
    @Test func smolLM2GGUF() throws {
        let path = ChatFixtures.smolLM2GGUF.path
        try #require(FileManager.default.fileExists(atPath: path), "\(ChatFixtures.fetchAdvice)")
        let (tokenizer, template) = try TextSetup.resolve(model: path)
        #expect(template.name == "smollm2" && template.origin == "exact match of the model's template")
        #expect(template.defaultSystemPrompt == "You are a helpful AI assistant named SmolLM, trained by Hugging Face")
        let encoder = try ChatEncoder(tokenizer: tokenizer, template: template)
        #expect(encoder.stopTokenIDs == [2], "<|im_end|> is both end of turn and EOS")
        for golden in ChatFixtures.goldens.conversations where golden.template == "smollm2" {
            let example = encoder.example(golden.messages.map(\.chat))
            #expect(example.inputIDs.map(Int.init) == golden.input_ids)
            #expect(example.labels.map { $0 == -100 ? 0 : 1 } == golden.assistant_mask)
        }
    }
}
