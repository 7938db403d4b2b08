/// An owned, zero-initialised, fixed-size Float allocation: the storage behind every parameter,
/// gradient, moment and activation buffer. Access goes through the buffer pointer, borrowed once.
public final class FloatBuffer: @unchecked Sendable {
    public let pointer: UnsafeMutableBufferPointer<Float>

    public init(count: Int) {
        precondition(count >= 0, "FloatBuffer: negative count \(count)")
        pointer = .allocate(capacity: count)
        pointer.initialize(repeating: 0)
    }

    deinit { pointer.deallocate() }

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
