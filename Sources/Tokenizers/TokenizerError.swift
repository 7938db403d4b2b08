/// An error raised while loading a tokenizer: which file, where in it, what was expected and what was found.
///
/// Encoding and decoding never throw; every problem with a tokenizer definition is reported at load time,
/// including components that are valid for HF `tokenizers` but not supported here (so that an unsupported
/// tokenizer is refused instead of silently producing different ids).
public struct TokenizerError: Error, CustomStringConvertible, Sendable, Equatable {
    /// The file being read, or a description of the in-memory source (e.g. "GGUF metadata").
    public var file: String
    /// Where in the file: a JSON key path such as `pre_tokenizer.pretokenizers[1].pattern`, or `line 12`.
    public var location: String
    /// What a supported tokenizer has there.
    public var expected: String
    /// What this file has there.
    public var found: String

    public init(file: String, location: String, expected: String, found: String) {
        self.file = file
        self.location = location
        self.expected = expected
        self.found = found
    }

    public var description: String {
        "\(file): \(location): expected \(expected), found \(found)"
    }
}
