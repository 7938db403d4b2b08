import SystemPackage
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

#if _endian(big)
#error("Checkpoints reads little-endian safetensors and GGUF files by direct loads; big-endian hosts are not supported")
#endif

/// A read-only, private memory mapping of a whole file, unmapped when the last reference goes away.
///
/// Pages are faulted in on first touch, so reading a range of a tensor costs only the pages that hold
/// it. The mapping is immutable after `init`, which makes sharing it across threads safe.
/// The corresponding C functions are `open` (swift-system's `FileDescriptor.open`), `fstat`, `mmap` and `munmap`.
/// `MAP_PRIVATE` read-only pages are the page cache's own: every process that maps the file shares one copy.
public final class MappedFile: @unchecked Sendable {
    /// The path the file was opened with, for error messages.
    public let path: String
    /// The file's bytes; empty (with a nil base address) for an empty file.
    let bytes: UnsafeRawBufferPointer

    /// Maps the file at `path`. Throws ``CheckpointError`` (`.unreadableFile`) naming the path and the failed call.
    public init(path: String) throws {
        self.path = path
        let file = try Self.open(path)
        defer { try? file.close() }
        let descriptor = file.rawValue
        var status = stat()
        guard fstat(descriptor, &status) == 0 else { throw Self.systemError(path, "fstat") }
        guard (status.st_mode & S_IFMT) == S_IFREG else {
            throw CheckpointError(.unreadableFile, path: path, expected: "a regular file", found: "a directory or special file")
        }
        let size = Int(status.st_size)
        guard size > 0 else {
            bytes = UnsafeRawBufferPointer(start: nil, count: 0)
            return
        }
        let address = mmap(nil, size, PROT_READ, MAP_PRIVATE, descriptor, 0)
        guard let address, address != MAP_FAILED else { throw Self.systemError(path, "mmap") }
        bytes = UnsafeRawBufferPointer(start: address, count: size)
    }

    deinit {
        if let base = bytes.baseAddress { munmap(UnsafeMutableRawPointer(mutating: base), bytes.count) }
    }

    /// The size of the file in bytes.
    public var count: Int { bytes.count }

    /// Calls `body` with the mapped bytes; the pointer must not escape it (the mapping lives as long as `self`).
    public func withUnsafeBytes<R>(_ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R {
        try withExtendedLifetime(self) { try body(bytes) }
    }

    /// Whether the file at `path` begins with `magic` (reads only those bytes; a shorter file does not).
    public static func starts(with magic: [UInt8], path: String) throws -> Bool {
        let file = try open(path)
        defer { try? file.close() }
        var head = [UInt8](repeating: 0, count: magic.count)
        let got: Int
        do { got = try head.withUnsafeMutableBytes { try file.read(into: $0) } } catch let error as Errno {
            throw systemError(path, "read", code: error.rawValue)
        }
        return got == magic.count && head == magic
    }

    /// Whether the file at `path` begins with the four bytes `GGUF` (reads only those bytes).
    static func startsWithGGUFMagic(path: String) throws -> Bool {
        let file = try open(path)
        defer { try? file.close() }
        var magic: (UInt8, UInt8, UInt8, UInt8) = (0, 0, 0, 0)
        let got: Int
        do { got = try withUnsafeMutableBytes(of: &magic) { try file.read(into: $0) } } catch let error as Errno {
            throw systemError(path, "read", code: error.rawValue)
        }
        return got == 4 && magic == (0x47, 0x47, 0x55, 0x46)
    }

    /// Opens `path` read-only and close-on-exec; a failure names the path and the reason.
    private static func open(_ path: String) throws -> FileDescriptor {
        do { return try FileDescriptor.open(FilePath(path), .readOnly, options: [.closeOnExec]) } catch let error as Errno {
            throw systemError(path, "open", code: error.rawValue)
        }
    }

    static func systemError(_ path: String, _ call: String, code: Int32 = errno) -> CheckpointError {
        return CheckpointError(.unreadableFile, path: path, found: "\(call) failed: \(String(cString: strerror(code))) (errno \(code))")
    }
}
