#if canImport(Glibc)
import Glibc
#endif

/// What `/proc/cpuinfo` says about this CPU: its flags (instruction-set extensions) and fields.
///
/// This module is compiled for the baseline x86-64 instruction set, unlike the library targets
/// (Package.swift's `vectorISA`), so the executable can call ``CPUFeatures/missingForLibraries(cpuinfo:)``
/// before any of their code runs and refuse a CPU they cannot run on with a message instead of `SIGILL`.
public struct CPUInfo: Sendable {
    /// The file's text (the first processor's lines are the ones read).
    public var text: String

    public init(text: String) { self.text = text }

    /// `/proc/cpuinfo`, nil when it cannot be read (not Linux, or no procfs).
    public static func current() -> CPUInfo? {
        guard let file = fopen("/proc/cpuinfo", "r") else { return nil }
        defer { fclose(file) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 1 << 16)
        while true {
            let count = chunk.withUnsafeMutableBytes { fread($0.baseAddress, 1, $0.count, file) }
            if count <= 0 { break }
            bytes += chunk[0..<count]
        }
        return CPUInfo(text: String(decoding: bytes, as: UTF8.self))
    }

    /// The value of the first line whose key (before the `:`, tabs and spaces trimmed) is `key`.
    public func field(_ key: String) -> String? {
        for line in text.split(separator: "\n") {
            guard let colon = line.firstIndex(of: ":"),
                  line[..<colon].trimmingWhitespace() == key[...] else { continue }
            return String(line[line.index(after: colon)...].trimmingWhitespace())
        }
        return nil
    }

    /// The first `flags` line, split into flags (`avx2`, `fma`, `avx512f`, ...); nil when there is none.
    public var flags: Set<Substring>? {
        guard let line = text.split(separator: "\n").first(where: { $0.hasPrefix("flags") }) else { return nil }
        return Set(line.split(whereSeparator: { $0 == " " || $0 == "\t" || $0 == ":" }))
    }
}

public enum CPUFeatures {
    /// The `/proc/cpuinfo` flags of the extensions the library targets are compiled to use
    /// (`-target-cpu haswell` in Package.swift: AVX2 and FMA with BMI1/2, F16C, MOVBE, POPCNT and LZCNT,
    /// which Linux lists as `abm`). Every CPU this project meets has them (AMD Zen 1 and later, Intel
    /// Haswell and later).
    public static let libraryExtensions = ["avx", "avx2", "fma", "bmi1", "bmi2", "f16c", "movbe", "popcnt", "abm"]

    /// The flags of ``libraryExtensions`` this CPU lacks; empty when it has them all or when its
    /// flags cannot be read (then nothing is refused). On an x86-64 build only: elsewhere the library
    /// targets are built for the host's own baseline and nothing is required.
    public static func missingForLibraries(cpuinfo: CPUInfo? = CPUInfo.current()) -> [String] {
        #if arch(x86_64)
        guard let flags = cpuinfo?.flags else { return [] }
        return libraryExtensions.filter { !flags.contains(Substring($0)) }
        #else
        return []
        #endif
    }
}

extension Substring {
    fileprivate func trimmingWhitespace() -> Substring {
        var s = self
        while let c = s.first, c == " " || c == "\t" { s.removeFirst() }
        while let c = s.last, c == " " || c == "\t" || c == "\r" { s.removeLast() }
        return s
    }
}
