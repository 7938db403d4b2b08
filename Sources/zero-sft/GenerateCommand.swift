import ArgumentParser
import Foundation
import ModelIO
import Models
import Tokenizers
import Training

/// Sampling and context options shared by `generate` and `chat`.
struct GenerationArguments: ParsableArguments {
    @Option(name: .long, help: "Chat format: smollm2, qwen2, chatml, llama3 or plain (default: the model's own template, recognised).")
    var chatTemplate: ChatTemplate?
    @Option(name: .long, help: "Most tokens to generate per reply.")
    var maxNewTokens: Int = 256
    @Option(name: .long, help: "0: greedy (always the most likely token); otherwise sample from softmax(logits / temperature).")
    var temperature: Double = 0
    @Option(name: .long, help: "Nucleus sampling: keep the most likely tokens up to this cumulative probability (1: off).")
    var topP: Double = 1
    @Option(name: .long, help: "Keep only the K most likely tokens when sampling (0: off).")
    var topK: Int = 0
    @Option(name: .long, help: "Seed of the sampler (the same seed gives the same text).")
    var seed: UInt64 = 0
    @Option(name: .long, help: "Tokens the key/value cache holds (prompt and replies; default: the model's context, at most 4096).")
    var maxContext: Int?

    var sampling: SamplingOptions { SamplingOptions(temperature: temperature, topP: topP, topK: topK, seed: seed) }

    func validate() throws {
        guard maxNewTokens >= 1 else { throw ValidationError("--max-new-tokens must be at least 1, got \(maxNewTokens)") }
        if let maxContext, maxContext < 2 { throw ValidationError("--max-context must be at least 2, got \(maxContext)") }
        do { try sampling.validate() } catch let error as GenerationError { throw ValidationError(error.message) }
    }

    func capacity(_ config: ModelConfig) -> Int { maxContext ?? min(config.maxPositionEmbeddings, 4096) }
}

/// A loaded model ready to generate: weights in this process, its cache, tokenizer and chat format.
struct LoadedGenerator {
    let source: ModelSource
    let store: DenseUnitStore
    let generator: Generator
    let tokenizer: Tokenizer
    /// The model's chat format: the same renderer that builds training examples.
    let encoder: ChatEncoder
    let stopTokens: Set<Int>

    /// Stops at the template's end-of-turn tokens and at the model's stop ids (``ModelSource/stopTokenIDs``:
    /// `generation_config.json`'s `eos_token_id` when it has one, else `config.json`'s, as transformers).
    init(source: ModelSource, chatTemplate: ChatTemplate?, capacity: (ModelConfig) -> Int) throws {
        self.source = source
        Session.warn(source)
        encoder = try source.textSetup().encoder(template: chatTemplate)
        tokenizer = encoder.tokenizer
        store = try ModelExport.denseStore(for: source)
        generator = Generator(config: source.config, capacity: capacity(source.config))
        stopTokens = Set(encoder.stopTokenIDs).union(source.stopTokenIDs)
    }

    /// The conversation so far in the model's chat format, ending with the assistant generation prompt.
    func promptIDs(_ messages: [ChatMessage]) -> [Int32] { encoder.promptIDs(messages).map { Int32($0) } }

    func encode(_ text: String) -> [Int32] { tokenizer.encode(text, addSpecialTokens: true).map { Int32($0) } }

    /// Generates a reply after `prompt` (appended to the cache), streaming the text to `write` as it grows.
    func reply(after prompt: [Int32], options: GenerationArguments, sampler: inout TokenSampler,
               write: (String) -> Void) throws -> (tokens: [Int], reason: Generator.StopReason) {
        var printed = ""
        var tokens: [Int] = []
        let result = try generator.generate(after: prompt, store: store, sampler: &sampler, maxNewTokens: options.maxNewTokens,
                                            stopTokens: stopTokens) { token in
            tokens.append(token)
            // Print what decodes completely so far (a character split across tokens waits for its end).
            let text = tokenizer.decode(tokens, skipSpecialTokens: true)
            guard !text.hasSuffix("\u{FFFD}"), text.hasPrefix(printed) else { return }
            write(String(text.dropFirst(printed.count)))
            printed = text
        }
        let text = tokenizer.decode(result.tokens, skipSpecialTokens: true)
        if text.hasPrefix(printed), text.count > printed.count { write(String(text.dropFirst(printed.count))) }
        return result
    }
}

/// Standard output, unbuffered line by line and flushed as tokens arrive.
func writeOut(_ text: String) {
    FileHandle.standardOutput.write(Data(text.utf8))
}

struct GenerateCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "generate",
        abstract: "Continue a prompt with the model (KV cache; greedy or temperature/top-p sampling).",
        discussion: """
            The prompt is wrapped in the model's chat format as one user turn (with the template's default \
            system prompt), unless --raw is given. The reply is streamed to stdout; with --json a final line \
            {"text", "tokens", "prompt_tokens", "stop_reason", "prompt_seconds", "decode_seconds", "tokens_per_sec"} \
            follows (tokens_per_sec: generated tokens per second of decoding). Runs in one process.
            """)

    @OptionGroup var modelOptions: ModelOptions
    @Option(name: .long, help: "The user message (or, with --raw, the text to continue).")
    var prompt: String
    @Option(name: .long, help: "A system message (replaces the chat template's default one).")
    var system: String?
    @Flag(name: .long, help: "Continue the prompt text as is, without the chat format.")
    var raw = false
    @Flag(name: .long, help: "Print a JSON summary line after the reply.")
    var json = false
    @OptionGroup var generation: GenerationArguments

    func run() throws {
        let loaded = try LoadedGenerator(source: modelOptions.resolve(), chatTemplate: generation.chatTemplate, capacity: generation.capacity)
        let ids: [Int32]
        if raw {
            ids = loaded.encode(prompt)
        } else {
            ids = loaded.promptIDs((system.map { [ChatMessage.system($0)] } ?? []) + [.user(prompt)])
        }
        guard !ids.isEmpty else { throw ValidationError("the prompt encodes to no tokens") }
        var sampler = TokenSampler(generation.sampling)
        let started = Date()
        _ = try loaded.generator.append(ids, store: loaded.store)
        let prefilled = Date()
        let result = try loaded.reply(after: [], options: generation, sampler: &sampler, write: writeOut)
        let decodeSeconds = Date().timeIntervalSince(prefilled), prefillSeconds = prefilled.timeIntervalSince(started)
        writeOut("\n")
        if json {
            let summary: [String: Any] = [
                "text": loaded.tokenizer.decode(result.tokens, skipSpecialTokens: true), "tokens": result.tokens,
                "prompt_tokens": ids.count, "stop_reason": result.reason.rawValue,
                "prompt_seconds": prefillSeconds, "decode_seconds": decodeSeconds,
                "tokens_per_sec": Double(result.tokens.count) / max(decodeSeconds, 1e-9),
            ]
            let data = try JSONSerialization.data(withJSONObject: summary, options: [.sortedKeys, .withoutEscapingSlashes])
            writeOut(String(decoding: data, as: UTF8.self) + "\n")
        }
    }
}

struct ChatCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "chat",
        abstract: "Talk to the model: one line of stdin per user turn; /reset starts over, /exit or end of input quits.",
        discussion: """
            The conversation is kept in the key/value cache: each turn feeds only the tokens that are new \
            since the last one. Replies stop at the end-of-turn token. Runs in one process.
            """)

    @OptionGroup var modelOptions: ModelOptions
    @Option(name: .long, help: "A system message (replaces the chat template's default one).")
    var system: String?
    @OptionGroup var generation: GenerationArguments

    func run() throws {
        let loaded = try LoadedGenerator(source: modelOptions.resolve(), chatTemplate: generation.chatTemplate, capacity: generation.capacity)
        var sampler = TokenSampler(generation.sampling)
        var messages: [ChatMessage] = system.map { [.system($0)] } ?? []
        let initial = messages
        var cached: [Int32] = []   // the tokens in the cache, in order
        let interactive = isatty(0) != 0
        func prompt() { if interactive { FileHandle.standardError.write(Data("> ".utf8)) } }
        prompt()
        var lines = StandardInputLines()
        while let next = lines.next() {
            guard case .success(let line) = next else {
                if case .failure(let error) = next { FileHandle.standardError.write(Data("(\(error); line ignored)\n".utf8)) }
                prompt()
                continue
            }
            let input = line.trimmingCharacters(in: .whitespaces)
            if input == "/exit" || input == "/quit" { break }
            if input == "/reset" {
                messages = initial
                cached = []
                loaded.generator.reset()
                FileHandle.standardError.write(Data("(conversation cleared)\n".utf8))
                prompt()
                continue
            }
            if input.isEmpty { prompt(); continue }
            messages.append(.user(input))
            let ids = loaded.promptIDs(messages)
            // Reuse the cached prefix; feed the rest.
            var common = 0
            while common < min(ids.count, cached.count), ids[common] == cached[common] { common += 1 }
            if common == ids.count { common -= 1 }   // at least one token must be fed to get logits
            if ids.count > loaded.generator.capacity - 1 {
                FileHandle.standardError.write(Data("(the conversation no longer fits in --max-context \(loaded.generator.capacity); use /reset)\n".utf8))
                messages.removeLast()
                prompt()
                continue
            }
            loaded.generator.truncate(to: common)
            let result = try loaded.reply(after: Array(ids[common...]), options: generation, sampler: &sampler, write: writeOut)
            writeOut("\n")
            // The cache holds these (and, after a stop token, that token: the next turn's render re-feeds it).
            cached = Array((ids + result.tokens.map { Int32($0) }).prefix(loaded.generator.length))
            messages.append(.assistant(loaded.tokenizer.decode(result.tokens, skipSpecialTokens: true)))
            prompt()
        }
    }
}
