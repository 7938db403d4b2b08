import SystemPackage
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A file that could not be read: the path, the system call that failed and the system's reason
/// (`open failed: No such file or directory (errno 2)`), never Foundation's `NSCocoaErrorDomain` text.
public struct FileReadError: Error, CustomStringConvertible, Sendable, Equatable {
    public var path: String
    /// The failing operation: `open`, `fstat`, `read`, or `open (a directory)`.
    public var operation: String
    public var reason: String

    public init(path: String, operation: String, reason: String) {
        self.path = path
        self.operation = operation
        self.reason = reason
    }

    public var description: String { "\(path): cannot read: \(operation) failed: \(reason)" }
}

/// Whole-file reads with POSIX error messages.
public enum FileContents {
    /// The bytes of the file at `path`. The corresponding C functions are `open` and `read` (through
    /// swift-system's `FileDescriptor`, which retries `EINTR`) and `fstat`.
    /// Throws ``FileReadError`` naming the path and the failing call; a directory is refused.
    public static func read(_ path: String) throws(FileReadError) -> [UInt8] {
        let file: FileDescriptor
        do { file = try FileDescriptor.open(FilePath(path), .readOnly, options: [.closeOnExec]) } catch {
            throw failure(path, "open", error)
        }
        defer { try? file.close() }
        var status = stat()
        guard fstat(file.rawValue, &status) == 0 else { throw failure(path, "fstat", Errno(rawValue: errno)) }
        if (status.st_mode & S_IFMT) == S_IFDIR {
            throw FileReadError(path: path, operation: "read", reason: "it is a directory, not a file")
        }
        var bytes: [UInt8] = []
        // Regular files report their size; pipes and character devices are read until end of file.
        bytes.reserveCapacity(max(0, Int(status.st_size)))
        var chunk = [UInt8](repeating: 0, count: 1 << 16)
        while true {
            let got: Int
            do { got = try chunk.withUnsafeMutableBytes { try file.read(into: $0) } } catch { throw failure(path, "read", error) }
            if got == 0 { break }
            bytes.append(contentsOf: chunk[0..<got])
        }
        return bytes
    }

    static func failure(_ path: String, _ call: String, _ error: any Error) -> FileReadError {
        guard let code = error as? Errno else { return FileReadError(path: path, operation: call, reason: "\(error)") }
        return FileReadError(path: path, operation: call, reason: "\(String(cString: strerror(code.rawValue))) (errno \(code.rawValue))")
    }
}
