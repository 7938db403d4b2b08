#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// An owned, zero-initialised, fixed-size Float allocation: the storage behind every parameter,
/// gradient, moment and activation buffer. Access goes through the buffer pointer, borrowed once.
///
/// Buffers of ``mappingThreshold`` bytes or more are anonymous memory maps (zero pages from the
/// kernel, counted in the RSS once touched) and are unmapped when freed, so a rank's RSS follows the
/// buffers it holds. Through `malloc`, glibc would keep freed buffers below its dynamic mmap
/// threshold (which rises to the size of the last freed mapping, up to 32 MiB) in the heap: on
/// SmolLM2 at stage 3 that kept 30–60 MiB of freed layer buffers per rank that no plan can see.
public final class FloatBuffer: @unchecked Sendable {
    public let pointer: UnsafeMutableBufferPointer<Float>
    private let isMapped: Bool

    /// Buffers at least this large (1 MiB) are mapped rather than allocated from the heap.
    public static let mappingThreshold = 1 << 20

    /// - Parameter prefault: write the (zero) pages at once, over the rank's threads, for a buffer the
    ///   caller will write in full anyway (gradients, moments). A mapped page first *read* maps the
    ///   shared zero page, and the write after it takes a second fault that breaks the huge zero page
    ///   up: AdamW's first step (`m`, `v` read before written) and the gradient gemms (`beta = 1`)
    ///   paid 0.75–0.87 s per GiB that way, against 0.13 s per GiB written first (measured on the
    ///   Zen 5 VM, family 26 model 2, with transparent huge pages on `madvise`). Heap-allocated (small) buffers are
    ///   already written by their zero initialisation.
    public init(count: Int, prefault: Bool = false) {
        precondition(count >= 0, "FloatBuffer: negative count \(count)")
        let bytes = count * MemoryLayout<Float>.stride
        if bytes >= Self.mappingThreshold {
            let address = mmap(nil, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0)
            guard let address, address != UnsafeMutableRawPointer(bitPattern: -1) else {
                fatalError("FloatBuffer: cannot map \(bytes) bytes (\(count) floats): \(String(cString: strerror(errno)))")
            }
            // Transparent huge pages where the kernel allows them on request: 512 times fewer page
            // faults when a freshly mapped buffer is first written.
            _ = madvise(address, bytes, Int32(MADV_HUGEPAGE))
            pointer = UnsafeMutableBufferPointer(start: address.bindMemory(to: Float.self, capacity: count), count: count)
            isMapped = true
            if prefault { Self.writeZeros(address, bytes: bytes) }
        } else {
            pointer = .allocate(capacity: count)
            pointer.initialize(repeating: 0)
            isMapped = false
        }
    }

    /// Writes zeros over `bytes` bytes at `address` in runs of whole 2 MiB pages, split over the
    /// rank's threads (the page faults of a fresh mapping are taken in parallel).
    private static func writeZeros(_ address: UnsafeMutableRawPointer, bytes: Int) {
        let page = 1 << 21
        let pages = (bytes + page - 1) / page
        Parallel.forEach(count: pages, grain: 16) { range in
            let start = range.lowerBound * page
            _ = memset(address + start, 0, min(range.upperBound * page, bytes) - start)
        }
    }

    deinit {
        if isMapped {
            munmap(UnsafeMutableRawPointer(pointer.baseAddress!), bytes)
        } else {
            pointer.deallocate()
        }
    }

    public var count: Int { pointer.count }
    public var bytes: Int { pointer.count * MemoryLayout<Float>.stride }

    /// Elements `range` as a mutable view.
    @inline(__always)
    public func slice(_ range: Range<Int>) -> UnsafeMutableBufferPointer<Float> {
        precondition(range.lowerBound >= 0 && range.upperBound <= pointer.count, "FloatBuffer: range \(range) outside 0..<\(pointer.count)")
        return UnsafeMutableBufferPointer(rebasing: pointer[range])
    }

    /// The first `count` elements, read-only.
    @inline(__always)
    public func prefix(_ count: Int) -> UnsafeBufferPointer<Float> { UnsafeBufferPointer(slice(0..<count)) }

    public func zero() { pointer.update(repeating: 0) }

    /// The buffer's bytes as `2 × count` `UInt16` values (bf16 patterns: `--param-dtype bf16`'s
    /// all-gathers), reachable inside `body` only.
    public func withUInt16s<R>(_ body: (UnsafeMutableBufferPointer<UInt16>) throws -> R) rethrows -> R {
        try UnsafeMutableRawBufferPointer(pointer).withMemoryRebound(to: UInt16.self) { try body($0) }
    }
}

extension UnsafeMutableBufferPointer where Element == Float {
    /// Elements `range` of this buffer, mutable.
    @inline(__always)
    public func view(_ range: Range<Int>) -> UnsafeMutableBufferPointer<Float> {
        UnsafeMutableBufferPointer(rebasing: self[range])
    }
}

extension UnsafeBufferPointer where Element == Float {
    /// Elements `range` of this buffer.
    @inline(__always)
    public func view(_ range: Range<Int>) -> UnsafeBufferPointer<Float> {
        UnsafeBufferPointer(rebasing: self[range])
    }
}
