/// The built-in job: a small model learns to answer a fixed set of questions, byte by byte.
///
/// Tokens are bytes (vocabulary 256); three control bytes mark the turns: `0x01` starts the user's
/// turn, `0x02` the assistant's, `0x03` ends it. Only the answer and its end marker are supervised,
/// exactly like an assistant turn in chat SFT.
public enum DemoTask {
    public static let userToken: Int32 = 1
    public static let assistantToken: Int32 = 2
    public static let endToken: Int32 = 3

    public static let pairs: [(question: String, answer: String)] = [
        ("What is the capital of France?", "Paris."),
        ("What is the capital of Japan?", "Tokyo."),
        ("What is the capital of Italy?", "Rome."),
        ("What is the capital of Egypt?", "Cairo."),
        ("What is the capital of Peru?", "Lima."),
        ("What is the capital of Kenya?", "Nairobi."),
        ("What is the capital of Canada?", "Ottawa."),
        ("What is the capital of Norway?", "Oslo."),
        ("What colour is the sky?", "Blue, on a clear day."),
        ("What colour is grass?", "Green."),
        ("How many legs does a spider have?", "Eight."),
        ("How many days are in a week?", "Seven."),
        ("What is 2 + 3?", "5"),
        ("What is 7 + 6?", "13"),
        ("What is 9 - 4?", "5"),
        ("What is 12 + 30?", "42"),
        ("Say hello.", "Hello!"),
        ("Reverse the word cat.", "tac"),
        ("Spell dog backwards.", "god"),
        ("Which planet is red?", "Mars."),
        ("Which animal says moo?", "A cow."),
        ("What do bees make?", "Honey."),
        ("Who wrote Hamlet?", "William Shakespeare."),
        ("What is frozen water called?", "Ice."),
    ]

    /// The prompt part of a conversation: `<user> question <assistant>`.
    public static func prompt(_ question: String) -> [Int32] {
        [userToken] + question.utf8.map { Int32($0) } + [assistantToken]
    }

    /// One supervised example: labels on the answer bytes and the end marker only.
    public static func example(question: String, answer: String) -> SFTExample {
        let prompt = prompt(question)
        let response = answer.utf8.map { Int32($0) } + [endToken]
        return SFTExample(inputIDs: prompt + response,
                          labels: [Int32](repeating: -100, count: prompt.count) + response)
    }

    public static func examples() -> [SFTExample] { pairs.map { example(question: $0.question, answer: $0.answer) } }

    public static func decode(_ tokens: [Int32]) -> String {
        String(decoding: tokens.filter { $0 >= 32 && $0 < 256 }.map { UInt8($0) }, as: UTF8.self)
    }
}
