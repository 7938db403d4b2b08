import Tokenizers

/// Which tokens of a conversation are trained (`--train-on`).
public enum TrainOn: String, Sendable, Equatable, CaseIterable {
    /// Every assistant turn's content and end-of-turn token (the default; TRL's `assistant_only_loss`).
    case assistant
    /// Only the last assistant turn's content and end-of-turn token.
    case last
    /// Every token, the prompt included.
    case all
}

/// Turns conversations into token ids with the model's tokenizer and chat template: training examples
/// with labels on the assistant turns, and generation prompts. One renderer serves both, so a model is
/// trained on exactly the layout it is prompted with.
///
/// The rendered string is tokenized as one text (the ids HF's `apply_chat_template(tokenize=True)` gives:
/// no special tokens added, so no second BOS), and each assistant turn's byte span is mapped to the tokens
/// that overlap it (as transformers' `return_assistant_tokens_mask` maps character spans with
/// `char_to_token`). Token spans come from the byte length of each token's text. When a normalizer rewrote
/// the text (so the lengths do not add up to the string's), each piece's length is taken from its own
/// tokens; when even that does not add up (an added token that strips the spaces around it), the pieces
/// are tokenized one by one.
public struct ChatEncoder: Sendable {
    public let tokenizer: Tokenizer
    public let template: ChatTemplate
    public let special: ChatTemplate.SpecialTexts
    /// Ids that end an assistant turn: the template's end-of-turn token, then the tokenizer's EOS.
    public let stopTokenIDs: [Int]
    /// Ids the tokenizer's post-processor puts first (e.g. BOS); only `plain` writes them itself.
    let prefixIDs: [Int]
    /// UTF-8 byte count of each id's text (-1 when unknown).
    let byteLengths: [Int]
    /// Whether each id is an added token (split out of the text before the model's pre-tokenizer).
    let isAddedToken: [Bool]

    public init(tokenizer: Tokenizer, template: ChatTemplate) throws(ChatTemplateError) {
        self.tokenizer = tokenizer
        self.template = template
        let bos = tokenizer.bosTokenID.flatMap { tokenizer.token(of: $0) }
        let eos = tokenizer.eosTokenID.flatMap { tokenizer.token(of: $0) }
        if template.style == .plain && eos == nil {
            throw ChatTemplateError("the plain chat template ends each completion with the EOS token, and this tokenizer has none")
        }
        special = ChatTemplate.SpecialTexts(
            beginOfText: template.style == .llama3 ? (bos ?? "<|begin_of_text|>") : (bos ?? ""), endOfText: eos ?? "")
        for token in template.requiredTokens(special) where tokenizer.encode(token).count != 1 || tokenizer.id(of: token) == nil {
            throw ChatTemplateError(
                "the \(template.name) chat template writes \(token), which this tokenizer does not have as a (special) token; "
                    + "pass --chat-template with a layout this tokenizer was made for")
        }
        var stops: [Int] = []
        for id in [tokenizer.id(of: template.endOfTurn(special)), tokenizer.eosTokenID] {
            if let id, !stops.contains(id) { stops.append(id) }
        }
        if template.style == .llama3, let end = tokenizer.id(of: "<|end_of_text|>"), !stops.contains(end) { stops.append(end) }
        stopTokenIDs = stops
        prefixIDs = template.style == .plain ? tokenizer.encode("", addSpecialTokens: true) : []

        var lengths = [Int](repeating: -1, count: tokenizer.vocabularySize)
        for id in 0..<tokenizer.vocabularySize {
            // A model token's text is byte-level: one character per byte.
            if let token = tokenizer.token(of: id) { lengths[id] = token.unicodeScalars.count }
        }
        var added = [Bool](repeating: false, count: tokenizer.vocabularySize)
        for token in tokenizer.addedTokens {
            lengths[token.id] = token.content.utf8.count
            added[token.id] = true
        }
        byteLengths = lengths
        isAddedToken = added
    }

    /// The rendering of `messages` with the special texts of this tokenizer.
    public func render(_ messages: [ChatMessage], addGenerationPrompt: Bool = false) -> ChatTemplate.Rendering {
        template.render(messages, addGenerationPrompt: addGenerationPrompt, special: special)
    }

    /// The ids of a generation prompt: the conversation so far followed by the opening of an assistant turn
    /// (`add_generation_prompt=True`). Generation stops at one of ``stopTokenIDs``.
    public func promptIDs(_ messages: [ChatMessage]) -> [Int] {
        prefixIDs + tokenizer.encode(render(messages, addGenerationPrompt: true).text)
    }

    /// The ids of `messages` and, for each, the index of the assistant message it belongs to (nil: prompt).
    public func tokens(_ messages: [ChatMessage]) -> (ids: [Int], turns: [Int?]) {
        let rendering = render(messages)
        let ids = tokenizer.encode(rendering.text)
        let prefixTurns = [Int?](repeating: nil, count: prefixIDs.count)
        if let turns = turnsFromSpans(ids, rendering) { return (prefixIDs + ids, prefixTurns + turns) }
        // Token texts do not add up to the pieces: tokenize piece by piece.
        var pieceIDs = prefixIDs
        var pieceTurns = prefixTurns
        for piece in rendering.pieces {
            let encoded = tokenizer.encode(piece.text)
            pieceIDs += encoded
            pieceTurns += [Int?](repeating: piece.assistantTurn, count: encoded.count)
        }
        return (pieceIDs, pieceTurns)
    }

    /// The turn of each token of the whole rendering, from byte spans: a token belongs to an assistant turn
    /// when its bytes overlap the turn's piece. Piece lengths are their UTF-8 lengths, or, when a normalizer
    /// rewrote the text, the byte lengths of their tokens on their own; nil when neither adds up.
    func turnsFromSpans(_ ids: [Int], _ rendering: ChatTemplate.Rendering) -> [Int?]? {
        func length(_ ids: [Int]) -> Int? {
            var total = 0
            for id in ids {
                guard id >= 0, id < byteLengths.count, byteLengths[id] >= 0 else { return nil }
                total += byteLengths[id]
            }
            return total
        }
        guard let total = length(ids) else { return nil }
        var pieceLengths = rendering.pieces.map { $0.text.utf8.count }
        if pieceLengths.reduce(0, +) != total {
            var normalized: [Int] = []
            for piece in rendering.pieces {
                guard let count = length(tokenizer.encode(piece.text)) else { return nil }
                normalized.append(count)
            }
            guard normalized.reduce(0, +) == total else { return nil }
            pieceLengths = normalized
        }
        var turns = [Int?](repeating: nil, count: ids.count)
        var tokenStart = 0, token = 0, pieceStart = 0
        for (piece, pieceLength) in zip(rendering.pieces, pieceLengths) {
            let pieceEnd = pieceStart + pieceLength
            if let turn = piece.assistantTurn, pieceEnd > pieceStart {
                // Skip tokens that end at or before the piece starts, then mark those that start before it ends.
                while token < ids.count && tokenStart + byteLengths[ids[token]] <= pieceStart {
                    tokenStart += byteLengths[ids[token]]
                    token += 1
                }
                var position = token, positionStart = tokenStart
                while position < ids.count && positionStart < pieceEnd {
                    turns[position] = turn
                    positionStart += byteLengths[ids[position]]
                    position += 1
                }
            }
            pieceStart = pieceEnd
        }
        return turns
    }

    /// Where the tokens of `messages` (`ids`, as ``tokens(_:)`` gives them) can be cut exactly, for
    /// `--long-examples split`; nil when no turn can be cut off.
    ///
    /// A message start is a cut point when it falls on a token boundary at an added (special) token
    /// (`<|im_start|>`, `<|start_header_id|>`): HF tokenizers split the text at added tokens before
    /// anything else, so the tokens on either side do not depend on the other side, and a slice of `ids`
    /// between two such points equals the tokenization of its own text. The template writes each message
    /// the same way wherever it stands (the BOS and a default system prompt come before the first message
    /// only, and belong to the prefix every piece repeats), so that text is the template applied to the
    /// system prompt and those messages. The `plain` template has no such token, and a normalizer that
    /// rewrites text breaks the byte accounting: such conversations cannot be split (nil).
    public func turnBoundaries(_ messages: [ChatMessage], ids: [Int]) -> TurnBoundaries? {
        let rendering = render(messages)
        guard rendering.messageStarts.count == messages.count else { return nil }
        // Byte offset of each token (after the post-processor's prefix, which has no text).
        var tokenAtByte: [Int: Int] = [:]
        var offset = 0
        for position in prefixIDs.count..<ids.count {
            let id = ids[position]
            guard id >= 0, id < byteLengths.count, byteLengths[id] >= 0 else { return nil }
            tokenAtByte[offset] = position
            offset += byteLengths[id]
        }
        guard offset == rendering.text.utf8.count else { return nil }
        func cut(_ message: Int) -> Int? {
            guard let position = tokenAtByte[rendering.messageStarts[message]], isAddedToken[ids[position]] else { return nil }
            return position
        }
        guard let firstTurn = messages.firstIndex(where: { $0.role != .system }), let prefixEnd = cut(firstTurn) else { return nil }
        var turnStarts = [prefixEnd], messageStarts = [prefixEnd]
        for message in (firstTurn + 1)..<max(firstTurn + 1, messages.count) {
            guard let position = cut(message) else { continue }
            messageStarts.append(position)
            if messages[message - 1].role == .assistant { turnStarts.append(position) }
        }
        return TurnBoundaries(prefixEnd: prefixEnd, turnStarts: turnStarts, messageStarts: messageStarts)
    }

    /// A training example: labels equal the ids on the trained tokens (``TrainOn``), -100 elsewhere.
    public func example(_ messages: [ChatMessage], trainOn: TrainOn = .assistant) -> SFTExample {
        let (ids, turns) = tokens(messages)
        let lastTurn = messages.lastIndex { $0.role == .assistant }
        let labels = zip(ids, turns).map { id, turn -> Int32 in
            switch trainOn {
            case .all: Int32(id)
            case .assistant: turn == nil ? -100 : Int32(id)
            case .last: turn != nil && turn == lastTurn ? Int32(id) : -100
            }
        }
        return SFTExample(inputIDs: ids.map(Int32.init), labels: labels)
    }
}
