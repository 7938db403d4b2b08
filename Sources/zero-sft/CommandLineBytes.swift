import Tokenizers

#if canImport(Glibc)
import Glibc
#endif

/// The command line as the parser should see it: every argument strict UTF-8, and a negative number
/// after an option kept as that option's value.
///
/// swift-argument-parser reads `--lr -1` as the option `--lr` without a value followed by a short flag
/// `-1` ("Missing value for '--lr <lr>'"; apple/swift-argument-parser#153). This CLI has no short
/// options and no positional arguments, so an argument that looks like a negative number (`-1`, `-0.5`,
/// `-1e-3`, `-inf`, `-1,2`) can only be the value of the option before it: it is joined as
/// `--lr=-1`, the spelling the parser accepts, and the option's own range check then reports it.
enum CommandLineBytes {
    /// Whether `argument` is a negative number (or a list starting with one), never an option name.
    static func looksNegativeNumeric(_ argument: String) -> Bool {
        guard argument.hasPrefix("-"), argument.count >= 2, !argument.hasPrefix("--") else { return false }
        let rest = argument.dropFirst()
        if let first = rest.first, first.isASCII, first.isNumber || first == "." { return true }
        return Double(argument) != nil   // -inf, -nan
    }

    /// `arguments` with each `--option -N` pair written `--option=-N`.
    static func joiningNegativeValues(_ arguments: [String]) -> [String] {
        var result: [String] = []
        var index = 0
        while index < arguments.count {
            let argument = arguments[index]
            if argument == "--" {
                result += arguments[index...]
                break
            }
            if argument.hasPrefix("--"), argument.count > 2, !argument.contains("="), index + 1 < arguments.count,
               looksNegativeNumeric(arguments[index + 1]) {
                result.append(argument + "=" + arguments[index + 1])
                index += 2
                continue
            }
            result.append(argument)
            index += 1
        }
        return result
    }

    /// The process's arguments (without the program name), each decoded strictly: an argument that
    /// is not UTF-8 is an error (Swift's `CommandLine.arguments` would replace its bytes with U+FFFD).
    static func arguments() throws -> [String] {
        var result: [String] = []
        for index in 1..<Int(CommandLine.argc) {
            guard let pointer = CommandLine.unsafeArgv[index] else { continue }
            let bytes = Array(UnsafeBufferPointer(start: UnsafeRawPointer(pointer).assumingMemoryBound(to: UInt8.self),
                                                  count: strlen(pointer)))
            result.append(try TextBytes.decode(bytes, source: "argument \(index)", countsLines: false))
        }
        return result
    }
}

/// The lines of standard input for the chat loop, decoded strictly: the line end (`\n`, or `\r\n` as
/// Python's text-mode `input()` sees it) is removed, every other byte kept; a line that is not UTF-8 is
/// an ``InvalidUTF8Error`` naming its line (Swift's `readLine()` would replace its bytes with U+FFFD).
struct StandardInputLines {
    private(set) var lineNumber = 0
    /// Standard input as a buffered C stream (this reader is its only user).
    private let stream = fdopen(STDIN_FILENO, "r")

    /// The next line, nil at end of input. The corresponding C function is `getline`.
    mutating func next() -> Result<String, InvalidUTF8Error>? {
        var pointer: UnsafeMutablePointer<CChar>? = nil
        var capacity = 0
        defer { free(pointer) }
        guard let stream else { return nil }
        let count = getline(&pointer, &capacity, stream)
        guard count >= 0, let pointer else { return nil }
        lineNumber += 1
        var bytes = Array(UnsafeRawBufferPointer(start: pointer, count: count))
        if bytes.last == 0x0A { bytes.removeLast() }
        if bytes.last == 0x0D { bytes.removeLast() }
        do { return .success(try TextBytes.decode(bytes, source: "standard input line \(lineNumber)", countsLines: false)) } catch {
            return .failure(error)
        }
    }
}
