internal import CMPI
import Foundation
// TEMPORARY size-1 stand-in with the agreed API, replaced by the Collectives helper's module on merge.
public protocol CollectiveElement: Sendable {}
extension Float: CollectiveElement {}
extension Double: CollectiveElement {}
extension Int32: CollectiveElement {}
extension Int64: CollectiveElement {}
extension UInt8: CollectiveElement {}
public enum ReductionOperation: Sendable { case sum, max, min }
public struct CollectiveError: Error, CustomStringConvertible { public var description: String }
public final class CollectiveRequest { public func wait() throws {}; public func test() throws -> Bool { true } }
public final class Communicator {
    nonisolated(unsafe) static var shared: Communicator?
    public static func world() throws -> Communicator { if let s = shared { return s }; let c = Communicator(); shared = c; return c }
    public let rank = 0
    public let size = 1
    public var hostName: String { ProcessInfo.processInfo.hostName }
    public func barrier() throws {}
    public func broadcast<T: CollectiveElement>(_ buffer: UnsafeMutableBufferPointer<T>, root: Int) throws {}
    public func allReduce<T: CollectiveElement>(_ buffer: UnsafeMutableBufferPointer<T>, _ op: ReductionOperation) throws {}
    public func allReduce<T: CollectiveElement>(_ value: T, _ op: ReductionOperation) throws -> T { value }
    public func allReduce<T: CollectiveElement>(_ values: [T], _ op: ReductionOperation) throws -> [T] { values }
    public func allGather<T: CollectiveElement>(_ shard: UnsafeBufferPointer<T>, into output: UnsafeMutableBufferPointer<T>) throws {
        if shard.baseAddress != UnsafePointer(output.baseAddress) { _ = output.initialize(from: shard) }
    }
    public func allGather<T: CollectiveElement>(_ values: [T]) throws -> [T] { values }
    public func reduceScatter<T: CollectiveElement>(_ input: UnsafeBufferPointer<T>, into shard: UnsafeMutableBufferPointer<T>, _ op: ReductionOperation) throws {
        _ = shard.initialize(from: input)
    }
    public func startAllGather<T: CollectiveElement>(_ shard: UnsafeBufferPointer<T>, into output: UnsafeMutableBufferPointer<T>) throws -> CollectiveRequest {
        try allGather(shard, into: output); return CollectiveRequest()
    }
    public func startReduceScatter<T: CollectiveElement>(_ input: UnsafeBufferPointer<T>, into shard: UnsafeMutableBufferPointer<T>, _ op: ReductionOperation) throws -> CollectiveRequest {
        try reduceScatter(input, into: shard, op); return CollectiveRequest()
    }
    public func abort(exitCode: Int32) -> Never { exit(exitCode) }
}
public enum Job {
    public static func run(_ body: (Communicator) throws -> Void) -> Never {
        do { try body(try Communicator.world()); exit(0) } catch { FileHandle.standardError.write("zero-sft: rank 0/1: \(error)\n".data(using: .utf8)!); exit(1) }
    }
}
