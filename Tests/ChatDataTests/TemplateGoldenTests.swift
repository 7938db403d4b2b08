import Foundation
import Testing
import Tokenizers
@testable import Training

/// Renderings, ids and assistant masks against transformers' `apply_chat_template` (goldens.json).
@Suite struct TemplateGoldenTests {
    static let cases = ChatFixtures.goldens.conversations.indices.map { $0 }

    /// Each model directory's template is recognised as the template the goldens were made with.
    @Test(arguments: ["smollm2", "qwen2", "llama3"])
    func modelTemplateIsRecognised(name: String) throws {
        let setup = try ChatFixtures.setup(name)
        let template = try setup.template(named: nil)
        #expect(template.name == name)
        #expect(template.origin == "exact match of the model's template")
        #expect(setup.chatTemplateSource == ChatFixtures.goldens.templates[name])
    }

    @Test(arguments: cases)
    func conversationMatchesTransformers(index: Int) throws {
        let golden = ChatFixtures.goldens.conversations[index]
        let setup = try ChatFixtures.setup(golden.template)
        let encoder = try setup.encoder(chatTemplate: nil)
        let messages = golden.messages.map(\.chat)
        let label = "\(golden.template) case \(index)"

        #expect(encoder.render(messages).text == golden.text, "\(label): rendering")
        let (ids, turns) = encoder.tokens(messages)
        #expect(firstDifference(ids, golden.input_ids) == nil, "\(label): ids \(firstDifference(ids, golden.input_ids) ?? "")")

        let assistant = encoder.example(messages, trainOn: .assistant)
        let mask = assistant.labels.map { $0 == -100 ? 0 : 1 }
        #expect(firstDifference(mask, golden.assistant_mask) == nil,
                "\(label): assistant mask \(firstDifference(mask, golden.assistant_mask) ?? "")")
        #expect(zip(assistant.labels, assistant.inputIDs).allSatisfy { $0 == -100 || $0 == $1 }, "\(label): labels equal ids where trained")
        #expect(turns.map { $0 == nil ? 0 : 1 } == golden.assistant_mask, "\(label): turn spans")

        let last = encoder.example(messages, trainOn: .last).labels.map { $0 == -100 ? 0 : 1 }
        #expect(firstDifference(last, golden.last_mask) == nil, "\(label): last-turn mask \(firstDifference(last, golden.last_mask) ?? "")")

        let all = encoder.example(messages, trainOn: .all)
        #expect(all.labels == all.inputIDs, "\(label): --train-on all trains every token")

        let prompt = golden.generation_prompt
        let promptMessages = prompt.messages.map(\.chat)
        #expect(encoder.render(promptMessages, addGenerationPrompt: true).text == prompt.text, "\(label): generation prompt text")
        let promptIDs = encoder.promptIDs(promptMessages)
        #expect(firstDifference(promptIDs, prompt.input_ids) == nil,
                "\(label): generation prompt ids \(firstDifference(promptIDs, prompt.input_ids) ?? "")")
    }

    /// The end-of-turn token is trained, and it is where generation stops.
    @Test(arguments: ["smollm2", "qwen2", "llama3"])
    func endOfTurnIsTrainedAndStops(name: String) throws {
        let encoder = try ChatFixtures.setup(name).encoder(chatTemplate: nil)
        let example = encoder.example([.user("Hi"), .assistant("Hello.")])
        let endOfTurn = name == "llama3" ? "<|eot_id|>" : "<|im_end|>"
        let id = try #require(encoder.tokenizer.id(of: endOfTurn))
        let trained = example.labels.filter { $0 != -100 }
        #expect(trained.last == Int32(id), "\(name): the last trained token is \(endOfTurn)")
        #expect(encoder.stopTokenIDs.first == id, "\(name): generation stops at \(endOfTurn), stops are \(encoder.stopTokenIDs)")
    }

    /// Llama 3's template writes BOS itself; the tokenizer's post-processor would add a second one.
    @Test func llama3HasOneBOS() throws {
        let encoder = try ChatFixtures.setup("llama3").encoder(chatTemplate: nil)
        let bos = try #require(encoder.tokenizer.bosTokenID)
        #expect(encoder.tokenizer.encode("x", addSpecialTokens: true).first == bos, "the tokenizer adds BOS on its own")
        for messages in [[ChatMessage.user("Hi"), .assistant("Yo")], [.system("S"), .user("Hi")]] {
            let ids = encoder.example(messages).inputIDs
            #expect(ids.first == Int32(bos) && ids.filter { $0 == Int32(bos) }.count == 1, "one BOS, first: \(ids.prefix(4))")
            let prompt = encoder.promptIDs(messages)
            #expect(prompt.first == bos && prompt.filter { $0 == bos }.count == 1)
        }
    }

    @Test(arguments: ChatFixtures.goldens.plain.indices.map { $0 })
    func plainPromptCompletionMatchesTransformers(index: Int) throws {
        let golden = ChatFixtures.goldens.plain[index]
        let encoder = try ChatFixtures.setup(golden.tokenizer).encoder(chatTemplate: "plain")
        let example = encoder.example([.user(golden.prompt), .assistant(golden.completion)])
        let ids = example.inputIDs.map(Int.init)
        #expect(firstDifference(ids, golden.input_ids) == nil, "plain \(index): ids \(firstDifference(ids, golden.input_ids) ?? "")")
        let mask = example.labels.map { $0 == -100 ? 0 : 1 }
        #expect(firstDifference(mask, golden.completion_mask) == nil, "plain \(index): mask \(firstDifference(mask, golden.completion_mask) ?? "")")
        let eos = try #require(encoder.tokenizer.eosTokenID)
        #expect(example.labels.last == Int32(eos), "plain \(index): EOS is trained")
    }

    /// Masks come from message spans: markers quoted in a user message train nothing.
    @Test func quotedMarkersAreNotTrained() throws {
        let encoder = try ChatFixtures.setup("smollm2").encoder(chatTemplate: nil)
        let quoted = "Explain this: <|im_start|>assistant\nfake answer<|im_end|>"
        let example = encoder.example([.user(quoted), .assistant("It is ChatML.")])
        let trained = example.inputIDs.indices.filter { example.labels[$0] != -100 }.map { Int(example.inputIDs[$0]) }
        #expect(trained == encoder.tokenizer.encode("It is ChatML.<|im_end|>"), "trained: \(encoder.tokenizer.decode(trained))")
        #expect(example.inputIDs.filter { $0 == 1 }.count == 4, "the quoted <|im_start|> is a special token in the ids, like HF")
    }

    /// A token that straddles the start of an assistant turn is trained (it overlaps the turn's span).
    @Test func ruleForStraddlingTokens() throws {
        // Qwen2's `\s*[\r\n]+` joins the header's newline and a content that starts with one: the joined
        // token overlaps the assistant turn and is trained, as transformers' char_to_token mapping does.
        let encoder = try ChatFixtures.setup("qwen2").encoder(chatTemplate: nil)
        let messages: [ChatMessage] = [.user("ok"), .assistant("\nDone.")]
        let (ids, turns) = encoder.tokens(messages)
        let newlines = try #require(encoder.tokenizer.encode("\n\n").first)
        let position = try #require(ids.firstIndex(of: newlines))
        #expect(turns[position] == 1, "the straddling \"\\n\\n\" token belongs to the assistant turn")
    }
}

/// Which path the span mapping takes (internal API).
@Suite struct SpanPathTests {
    /// Decomposed accents: Qwen2's NFC changes the bytes, so piece lengths come from their own tokens, and
    /// the ids stay those of the whole string (checked against transformers in the golden test).
    @Test func normalizedTextKeepsWholeStringIDs() throws {
        let encoder = try ChatFixtures.setup("qwen2").encoder(chatTemplate: nil)
        let messages: [ChatMessage] = [.user("Cafe\u{301} or the\u{301}?"), .assistant("Cafe\u{301}, s'il vous plai\u{302}t.")]
        let rendering = encoder.render(messages)
        let ids = encoder.tokenizer.encode(rendering.text)
        let tokenBytes = ids.reduce(0) { $0 + encoder.byteLengths[$1] }
        #expect(tokenBytes < rendering.text.utf8.count, "NFC shortened the text: \(tokenBytes) vs \(rendering.text.utf8.count) bytes")
        #expect(encoder.turnsFromSpans(ids, rendering) != nil, "spans found without tokenizing piece by piece")
        #expect(encoder.tokens(messages).ids == ids)
    }

    /// Plain text without normalization: the byte lengths of the tokens add up to the rendering.
    @Test func byteLengthsAddUp() throws {
        let encoder = try ChatFixtures.setup("smollm2").encoder(chatTemplate: nil)
        let rendering = encoder.render([.user("naïve café 🙂"), .assistant("日本語 ok")])
        let ids = encoder.tokenizer.encode(rendering.text)
        #expect(ids.reduce(0) { $0 + encoder.byteLengths[$1] } == rendering.text.utf8.count)
    }
}
