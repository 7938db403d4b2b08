import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// A file operation that failed: the path, the operation and the system's reason (`create directory
/// failed: Permission denied (errno 13)`), never Foundation's `NSCocoaErrorDomain` text.
public struct FileOperationError: Error, CustomStringConvertible, Sendable, Equatable {
    public var path: String
    /// What was attempted: `write`, `create directory`, `copy to …`, `open for writing`, …
    public var operation: String
    public var reason: String

    public init(path: String, operation: String, reason: String) {
        self.path = path
        self.operation = operation
        self.reason = reason
    }

    public var description: String { "\(path): \(operation) failed: \(reason)" }
}

/// Runs Foundation file calls and reports their failures as ``FileOperationError``.
public enum FileOperation {
    /// Runs `body` (a `FileManager` or `Data.write` call on `path`); a thrown Foundation error becomes a
    /// ``FileOperationError`` with the POSIX reason it carries.
    public static func perform<T>(_ operation: String, path: String, _ body: () throws -> T) throws(FileOperationError) -> T {
        do {
            return try body()
        } catch let error as FileOperationError {
            throw error
        } catch {
            throw FileOperationError(path: path, operation: operation, reason: reason(error))
        }
    }

    /// The POSIX reason inside a Foundation error (`No such file or directory (errno 2)`), or a plain
    /// description of its Cocoa code.
    public static func reason(_ error: Error) -> String {
        let ns = error as NSError
        func posix(_ code: Int) -> String { "\(String(cString: strerror(Int32(code)))) (errno \(code))" }
        if ns.domain == NSPOSIXErrorDomain { return posix(ns.code) }
        if let underlying = ns.userInfo[NSUnderlyingErrorKey] as? NSError, underlying.domain == NSPOSIXErrorDomain {
            return posix(underlying.code)
        }
        switch CocoaError.Code(rawValue: ns.code) {
        case .fileNoSuchFile, .fileReadNoSuchFile: return posix(Int(ENOENT))
        case .fileReadNoPermission, .fileWriteNoPermission: return posix(Int(EACCES))
        case .fileWriteOutOfSpace: return posix(Int(ENOSPC))
        case .fileWriteFileExists: return posix(Int(EEXIST))
        case .fileWriteVolumeReadOnly: return posix(Int(EROFS))
        default: return ns.domain == NSCocoaErrorDomain ? "file system error \(ns.code)" : "\(error)"
        }
    }
}
