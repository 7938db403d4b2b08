import Checkpoints
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// The checks of where a run writes, done by every command before any rank starts work (as inputs
/// are checked): a bad destination is an error naming the path before step 1, never a failure after
/// hours of training, and a user's file is never truncated by a mistaken path.
public enum OutputCheck {
    /// What the file systems under `--output-dir` must hold, in bytes.
    public struct SpaceNeeds: Sendable, Equatable {
        /// What the run surely writes: the final model (fp32 parameters + sidecars). Less free space is an error.
        public var required: Int
        /// What it may write at most at once: one checkpoint (parameters, AdamW m and v in fp32) beside
        /// the final model. Less free space is a warning with both figures.
        public var planned: Int

        /// For a model of `parameterCount` parameters whose tokenizer and other sidecar files take
        /// `sidecarBytes`: `required` = 4 bytes per parameter + `sidecarBytes` + 1 MiB (`config.json`,
        /// the safetensors header); `planned` = `required` + 3 roles × 4 bytes per parameter.
        public init(parameterCount: Int, sidecarBytes: Int) {
            required = parameterCount * 4 + sidecarBytes + 1 << 20
            planned = required + parameterCount * 3 * 4
        }

        public init(required: Int, planned: Int) {
            self.required = required
            self.planned = planned
        }
    }

    /// Checks `--output-dir`: an existing empty directory (our own leftovers of a killed save do not
    /// count; when `resuming`, a run's directory: any content beside a `checkpoint-STEP` folder,
    /// ``ModelCheckpoint/checkRunDirectory(_:)``) or a path that can be created (it is created now); a file can be created in it; its file
    /// system has `needs.required` bytes free. Returns warnings (free space below `needs.planned`).
    ///
    /// Throws `OptionError` naming `--output-dir` and the path: a regular file in its place, not empty
    /// (resuming: not empty and no checkpoint folder),
    /// cannot be created or written (read-only or full file system, permissions: the system's reason),
    /// too little space (both figures). The corresponding C functions are `stat`, `mkstemp`, `statvfs`.
    public static func outputDirectory(_ path: String, needs: SpaceNeeds, resuming: Bool = false) throws -> [String] {
        var info = stat()
        if stat(path, &info) == 0 {
            guard info.st_mode & S_IFMT == S_IFDIR else {
                throw OptionError(message: "--output-dir \(path): exists and is not a directory: choose a new path")
            }
            if resuming {
                try ModelCheckpoint.checkRunDirectory(path)
            } else {
                try ModelCheckpoint.checkFreshDirectory(path, resumable: true)
            }
        } else {
            do {
                try FileOperation.perform("create directory", path: path) {
                    try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
                }
            } catch {
                throw OptionError(message: "--output-dir \(error)")
            }
        }
        // Named like our writers' temporaries (``AtomicFile/isLeftover(_:)``), so that another rank's
        // check of the same directory at the same moment does not count it as content.
        var template = Array("\(path)/.zero-sft-probe.tmp-XXXXXX".utf8CString)
        let descriptor = template.withUnsafeMutableBufferPointer { mkstemp($0.baseAddress!) }
        guard descriptor >= 0 else {
            let code = errno
            throw OptionError(message: "--output-dir \(path): cannot create a file in it: \(String(cString: strerror(code))) (errno \(code))")
        }
        close(descriptor)
        template.withUnsafeBufferPointer { _ = unlink($0.baseAddress!) }
        var system = statvfs()
        guard statvfs(path, &system) == 0 else { return [] }
        let free = Int(system.f_bavail) &* Int(system.f_frsize)
        if free < needs.required {
            throw OptionError(message: "--output-dir \(path): \(megabytes(free)) free, the final model needs \(megabytes(needs.required))")
        }
        if free < needs.planned {
            return ["--output-dir \(path): \(megabytes(free)) free, less than the \(megabytes(needs.planned)) of a checkpoint "
                    + "(parameters and both AdamW moments in fp32) beside the final model"]
        }
        return []
    }

    /// Checks `--metrics-file`: never one of `inputs` (the data, the model's files, any other file the
    /// run reads), compared by device and inode after following links, not by spelling; an existing
    /// file is refused unless `resuming` (then it is appended to); a new one can be created (it is
    /// created and removed again, so a missing directory or a read-only file system fails now).
    ///
    /// `inputs` are paths as given: a directory stands for itself and the files directly in it.
    /// Throws `OptionError` naming `--metrics-file` and the path, or ``FileOperationError``
    /// (`create the metrics file failed: …`).
    public static func metricsFile(_ path: String, inputs: [String], resuming: Bool) throws {
        var info = stat()
        guard stat(path, &info) == 0 else {
            // A new file: create it exclusively and remove it again.
            let descriptor = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o644)
            guard descriptor >= 0 else {
                let code = errno
                throw FileOperationError(path: path, operation: "create the metrics file", reason: "\(String(cString: strerror(code))) (errno \(code))")
            }
            close(descriptor)
            unlink(path)
            return
        }
        guard info.st_mode & S_IFMT == S_IFREG else {
            throw OptionError(message: "--metrics-file \(path): exists and is not a regular file")
        }
        for input in inputs {
            for file in files(of: input) {
                var other = stat()
                if stat(file, &other) == 0, other.st_dev == info.st_dev, other.st_ino == info.st_ino {
                    let same = file == input ? input : "\(file) (in \(input))"
                    throw OptionError(message: "--metrics-file \(path) is the input \(same): writing metrics would destroy it; choose another path")
                }
            }
        }
        guard resuming else {
            throw OptionError(message: "--metrics-file \(path) exists: choose a new path or remove it (only a resumed run appends to its metrics file)")
        }
        guard access(path, W_OK) == 0 else {
            let code = errno
            throw FileOperationError(path: path, operation: "open the metrics file for appending", reason: "\(String(cString: strerror(code))) (errno \(code))")
        }
    }

    /// `path` itself, and the entries directly inside it when it is a directory.
    static func files(of path: String) -> [String] {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else { return [] }
        guard isDirectory.boolValue else { return [path] }
        let names = (try? FileManager.default.contentsOfDirectory(atPath: path)) ?? []
        return [path] + names.map { URL(fileURLWithPath: path).appendingPathComponent($0).path }
    }

    static func megabytes(_ bytes: Int) -> String {
        String(format: "%.1f MB", Double(bytes) / 1e6)
    }
}
