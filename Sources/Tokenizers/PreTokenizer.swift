/// How a `Split` pre-tokenizer treats the pieces its pattern matches (HF `SplitDelimiterBehavior`).
enum SplitBehavior: String, Sendable, CaseIterable {
    /// Matches are dropped.
    case removed = "Removed"
    /// Matches and the text between them become separate pieces.
    case isolated = "Isolated"
    /// Each match is appended to the piece before it.
    case mergedWithPrevious = "MergedWithPrevious"
    /// Each match is prepended to the piece after it.
    case mergedWithNext = "MergedWithNext"
    /// Adjacent matches become one piece.
    case contiguous = "Contiguous"
}

/// What a `Split` pre-tokenizer looks for.
enum SplitPattern: Sendable, Equatable {
    /// A literal string (HF `{"String": …}`), matched leftmost, non-overlapping.
    case literal([UInt8])
    /// One of the recognised regexes (HF `{"Regex": …}`).
    case regex(SplitRegex)
}

/// One step of the pre-tokenizer pipeline.
enum PreTokenizerStage: Sendable, Equatable {
    /// HF `Split`.
    case split(SplitPattern, SplitBehavior, invert: Bool)
    /// HF `Digits`: every `\p{N}` scalar on its own (`individual`) or runs of them (`Contiguous`).
    case digits(individual: Bool)
    /// HF `ByteLevel`: optionally prefix a space to each piece not starting with one, optionally split
    /// with the GPT-2 regex; the pieces then go to the model as bytes (their byte-level characters).
    case byteLevel(addPrefixSpace: Bool, useRegex: Bool)
}

/// A sequence of pre-tokenizer stages ending with `ByteLevel`, run depth-first over byte buffers.
///
/// HF applies each stage to all pieces before the next; each stage acts on each piece independently and
/// keeps the order, so running the stages depth-first gives the same pieces in the same order without
/// materialising the intermediate lists. Empty pieces are dropped after every stage, as HF does.
struct PreTokenizerPipeline: Sendable {
    let stages: [PreTokenizerStage]

    /// Calls `sink` with every final piece (raw UTF-8 bytes; the model maps them to byte-level tokens).
    func run(_ text: UnsafeBufferPointer<UInt8>, _ sink: (UnsafeBufferPointer<UInt8>) -> Void) {
        guard !text.isEmpty else { return }
        run(text, stage: 0, sink)
    }

    private func run(
        _ piece: UnsafeBufferPointer<UInt8>, stage: Int, _ sink: (UnsafeBufferPointer<UInt8>) -> Void
    ) {
        if stage == stages.count {
            sink(piece)
            return
        }
        func emit(_ start: Int, _ end: Int) {
            if end > start { run(UnsafeBufferPointer(rebasing: piece[start..<end]), stage: stage + 1, sink) }
        }
        switch stages[stage] {
        case .byteLevel(let addPrefixSpace, let useRegex):
            if addPrefixSpace, piece[0] != 0x20 {
                var prefixed = [UInt8](repeating: 0x20, count: piece.count + 1)
                prefixed.withUnsafeMutableBufferPointer { buffer in
                    _ = UnsafeMutableBufferPointer(rebasing: buffer[1...]).initialize(from: piece)
                }
                prefixed.withUnsafeBufferPointer { buffer in
                    byteLevel(buffer, useRegex: useRegex, stage: stage, sink)
                }
            } else {
                byteLevel(piece, useRegex: useRegex, stage: stage, sink)
            }
        case .split(.regex(let regex), .isolated, invert: false):
            regex.forEachMatch(in: piece, emit)
        case .digits(individual: true):
            Self.numberSegments(of: piece).forEach { emit($0.start, $0.end) }
        case .digits(individual: false):
            Self.apply(.contiguous, to: Self.numberSegments(of: piece)).forEach { emit($0.start, $0.end) }
        case .split(let pattern, let behavior, let invert):
            var segments = Self.segments(of: piece, pattern: pattern)
            if invert {
                for index in segments.indices { segments[index].isMatch.toggle() }
            }
            Self.apply(behavior, to: segments).forEach { emit($0.start, $0.end) }
        }
    }

    private func byteLevel(
        _ piece: UnsafeBufferPointer<UInt8>, useRegex: Bool, stage: Int, _ sink: (UnsafeBufferPointer<UInt8>) -> Void
    ) {
        if useRegex {
            SplitRegex.gpt2.forEachMatch(in: piece) { start, end in
                self.run(UnsafeBufferPointer(rebasing: piece[start..<end]), stage: stage + 1, sink)
            }
        } else {
            run(piece, stage: stage + 1, sink)
        }
    }

    // MARK: - Matches and behaviours, as in HF's `Pattern::find_matches` and `NormalizedString::split`

    struct Segment {
        var start: Int
        var end: Int
        var isMatch: Bool
    }

    /// Every `\p{N}` scalar as a match, the text between as non-matches (HF's `char::is_numeric` pattern).
    static func numberSegments(of piece: UnsafeBufferPointer<UInt8>) -> [Segment] {
        var segments: [Segment] = []
        var lastEnd = 0
        var position = 0
        while position < piece.count {
            let (value, length) = UTF8Walk.scalar(piece, at: position)
            if UnicodeClasses.classify(value) == .number {
                if lastEnd < position { segments.append(Segment(start: lastEnd, end: position, isMatch: false)) }
                segments.append(Segment(start: position, end: position + length, isMatch: true))
                lastEnd = position + length
            }
            position += length
        }
        if lastEnd < piece.count { segments.append(Segment(start: lastEnd, end: piece.count, isMatch: false)) }
        return segments
    }

    /// Matches of `pattern` and the gaps between them, covering the piece in order.
    static func segments(of piece: UnsafeBufferPointer<UInt8>, pattern: SplitPattern) -> [Segment] {
        var segments: [Segment] = []
        var previous = 0
        func add(_ start: Int, _ end: Int) {
            if previous != start { segments.append(Segment(start: previous, end: start, isMatch: false)) }
            segments.append(Segment(start: start, end: end, isMatch: true))
            previous = end
        }
        switch pattern {
        case .regex(let regex):
            regex.forEachMatch(in: piece) { add($0, $1) }
        case .literal(let literal):
            let count = literal.count
            precondition(count > 0, "empty Split patterns are rejected at load time")
            var position = 0
            literal.withUnsafeBufferPointer { needle in
                while position + count <= piece.count {
                    if piece[position] == needle[0], (1..<count).allSatisfy({ piece[position + $0] == needle[$0] }) {
                        add(position, position + count)
                        position += count
                    } else {
                        position += 1
                    }
                }
            }
        }
        if previous != piece.count { segments.append(Segment(start: previous, end: piece.count, isMatch: false)) }
        return segments
    }

    /// The pieces HF keeps for `behavior` (start, end), before dropping empty ones.
    static func apply(_ behavior: SplitBehavior, to segments: [Segment]) -> [(start: Int, end: Int)] {
        var result: [(start: Int, end: Int)] = []
        result.reserveCapacity(segments.count)
        switch behavior {
        case .isolated:
            for segment in segments { result.append((segment.start, segment.end)) }
        case .removed:
            for segment in segments where !segment.isMatch { result.append((segment.start, segment.end)) }
        case .contiguous:
            var previousMatch = false
            for segment in segments {
                if segment.isMatch == previousMatch, !result.isEmpty {
                    result[result.count - 1].end = segment.end
                } else {
                    result.append((segment.start, segment.end))
                }
                previousMatch = segment.isMatch
            }
        case .mergedWithPrevious:
            var previousMatch = false
            for segment in segments {
                if segment.isMatch, !previousMatch, !result.isEmpty {
                    result[result.count - 1].end = segment.end
                } else {
                    result.append((segment.start, segment.end))
                }
                previousMatch = segment.isMatch
            }
        case .mergedWithNext:
            var previousMatch = false
            for segment in segments.reversed() {
                if segment.isMatch, !previousMatch, !result.isEmpty {
                    result[result.count - 1].start = segment.start
                } else {
                    result.append((segment.start, segment.end))
                }
                previousMatch = segment.isMatch
            }
            result.reverse()
        }
        return result
    }
}
