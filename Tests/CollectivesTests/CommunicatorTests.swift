import Foundation
import Testing
@testable import Collectives

/// The one-rank communicator of a process started without a launcher (this test process), and
/// the pieces a collective is split into.
@Suite("Communicator without a launcher", .serialized)
struct CommunicatorTests {
    let communicator: Communicator

    init() throws {
        communicator = try Communicator.world()
    }

    @Test("is one rank, does not use MPI, and is the same instance on every call")
    func singleRank() throws {
        #expect(communicator.rank == 0)
        #expect(communicator.size == 1)
        #expect(!communicator.isUsingMPI)
        #expect(try Communicator.world() === communicator)
        var name = [CChar](repeating: 0, count: 256)
        gethostname(&name, 255)
        #expect(communicator.hostName == String(decoding: name.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self))
        try communicator.barrier()
    }

    @Test("all-reduce of one rank is the identity for every operation and form")
    func allReduceIsIdentity() throws {
        for op in [ReductionOperation.sum, .max, .min] {
            var values: [Float] = [3, -1.5, 0, .greatestFiniteMagnitude]
            let original = values
            try values.withUnsafeMutableBufferPointer { try communicator.allReduce($0, op) }
            #expect(values == original, "\(op) in place")
            #expect(try communicator.allReduce(original, op) == original, "\(op) array")
            #expect(try communicator.allReduce(Int64(-7), op) == -7, "\(op) value")
            #expect(try communicator.allReduce(UInt8(200), op) == 200, "\(op) UInt8 value")
        }
    }

    @Test("broadcast from rank 0 leaves the buffer as it is")
    func broadcast() throws {
        var values: [Double] = [1, 2, 3]
        try values.withUnsafeMutableBufferPointer { try communicator.broadcast($0, root: 0) }
        #expect(values == [1, 2, 3])
    }

    @Test("all-gather copies the shard, in place leaves it, array form returns it")
    func allGather() throws {
        let shard: [Int32] = [4, 5, 6]
        var output: [Int32] = [0, 0, 0]
        shard.withUnsafeBufferPointer { source in
            output.withUnsafeMutableBufferPointer { destination in
                #expect(throws: Never.self) { try communicator.allGather(source, into: destination) }
            }
        }
        #expect(output == shard)
        var inPlace: [Int32] = [7, 8]
        try inPlace.withUnsafeMutableBufferPointer { buffer in
            try communicator.allGather(UnsafeBufferPointer(buffer), into: buffer)
        }
        #expect(inPlace == [7, 8])
        #expect(try communicator.allGather([UInt8(1), 2]) == [1, 2])
        #expect(try communicator.allGather([Double]()) == [])
    }

    @Test("reduce-scatter of one rank copies the input into the shard")
    func reduceScatter() throws {
        let input: [Int64] = [10, -20, 30]
        var shard: [Int64] = [0, 0, 0]
        try input.withUnsafeBufferPointer { source in
            try shard.withUnsafeMutableBufferPointer { try communicator.reduceScatter(source, into: $0, .sum) }
        }
        #expect(shard == input)
    }

    @Test("non-blocking requests complete at once; wait and test are idempotent")
    func nonBlocking() throws {
        let shard = UnsafeMutableBufferPointer<Float>.allocate(capacity: 5)
        let output = UnsafeMutableBufferPointer<Float>.allocate(capacity: 5)
        defer { shard.deallocate(); output.deallocate() }
        for index in 0..<5 { shard[index] = Float(index) * 0.5 }
        output.initialize(repeating: .nan)
        let gather = try communicator.startAllGather(UnsafeBufferPointer(shard), into: output)
        #expect(gather.isComplete)
        #expect(try gather.test())
        try gather.wait()
        try gather.wait()
        #expect(Array(output) == Array(shard))

        output.initialize(repeating: .nan)
        let scatter = try communicator.startReduceScatter(UnsafeBufferPointer(shard), into: output, .max)
        try scatter.wait()
        #expect(try scatter.test())
        #expect(Array(output) == Array(shard))
    }

    @Test("pieces cover the count exactly, in order, none longer than the limit")
    func pieces() {
        for (count, limit) in [(203, 16), (64, 16), (1, 5), (5, 5), (0, 3), (10, 1)] {
            let pieces = Array(Pieces(count: count, limit: limit))
            #expect(pieces.count == (count + limit - 1) / limit, "count \(count), limit \(limit)")
            var next = 0
            for (index, piece) in pieces.enumerated() {
                #expect(piece.offset == next && piece.index == index && piece.pieceCount == pieces.count)
                #expect(piece.count >= 1 && piece.count <= limit, "piece \(index) of \(count)/\(limit) has \(piece.count)")
                next += piece.count
            }
            #expect(next == count)
        }
        let last = Array(Pieces(count: 203, limit: 16)).last
        #expect(last == Pieces.Piece(offset: 192, count: 11, index: 12, pieceCount: 13))
        #expect(last?.describe(total: 203) == ", piece 13 of 13 at element 192")
    }

    @Test("one MPI call moves at most maximumBytesPerCall bytes, and at least one element per rank")
    func elementsPerCall() {
        let saved = communicator.maximumBytesPerCall
        defer { communicator.maximumBytesPerCall = saved }
        #expect(communicator.elementsPerCall(UInt8.self, ranksPerCall: 1) == Int(Int32.max))
        #expect(communicator.elementsPerCall(Float.self, ranksPerCall: 3) == Int(Int32.max) / 12)
        communicator.maximumBytesPerCall = 64
        #expect(communicator.elementsPerCall(Float.self, ranksPerCall: 3) == 5)
        #expect(communicator.elementsPerCall(Double.self, ranksPerCall: 1) == 8)
        communicator.maximumBytesPerCall = 1
        #expect(communicator.elementsPerCall(Int64.self, ranksPerCall: 4) == 1)
    }

    /// The stopped rank of a job (SIGSTOP), continued by mpirun's kill sequence, gave up at once and blamed
    /// "another rank" exactly as the rank that waited for it did; its message now says it did not run.
    @Test("a timed-out wait says when this rank itself did not run during it, else that another rank stalled")
    func timeoutNamesAStalledSelf() throws {
        let saved = communicator.collectiveTimeout
        defer {
            communicator.collectiveTimeout = saved
            communicator.hasGivenUp = false
        }
        communicator.collectiveTimeout = 1
        var calls = 0
        // The second test of the collective comes 1.5 s after the first: this process did not run in between.
        let stalled = #expect(throws: CollectiveError.self) {
            try communicator.poll("a test wait") {
                calls += 1
                if calls == 2 { usleep(1_500_000) }
                return false
            }
        }
        #expect(stalled.map { "\($0)" }?.contains("this rank itself did not run for 1.5 s of the wait") == true, "\(stalled.map { "\($0)" } ?? "")")
        communicator.hasGivenUp = false
        let waited = #expect(throws: CollectiveError.self) { try communicator.poll("a test wait") { false } }
        let text = waited.map { "\($0)" } ?? ""
        #expect(text.contains("gave up after waiting 1 s") && text.contains("another rank is stalled, dead or far behind")
                && !text.contains("did not run"), "\(text)")
    }

    @Test("errors name the operation, rank, counts and MPI's reason")
    func errorDescription() {
        let error = CollectiveError(
            operation: "MPI_Allgather", rank: 2, size: 4, errorCode: 15, errorClass: 15,
            reason: "MPI_ERR_TRUNCATE: message truncated", details: "1000 × Float per rank")
        #expect(
            error.description
                == "MPI_Allgather failed on rank 2 of 4 (1000 × Float per rank): MPI_ERR_TRUNCATE: message truncated [MPI error code 15]")
    }

    @Test("element kinds match the Swift types")
    func elementKinds() {
        #expect(Float.collectiveElementKind == .float32 && MemoryLayout<Float>.stride == CollectiveElementKind.float32.byteCount)
        #expect(Double.collectiveElementKind == .float64 && MemoryLayout<Double>.stride == CollectiveElementKind.float64.byteCount)
        #expect(Int32.collectiveElementKind == .int32 && MemoryLayout<Int32>.stride == CollectiveElementKind.int32.byteCount)
        #expect(Int64.collectiveElementKind == .int64 && MemoryLayout<Int64>.stride == CollectiveElementKind.int64.byteCount)
        #expect(UInt8.collectiveElementKind == .uint8 && MemoryLayout<UInt8>.stride == CollectiveElementKind.uint8.byteCount)
    }

    @Test("a count mismatch is a precondition failure, not silent corruption")
    func countMismatchTraps() async {
        await #expect(processExitsWith: .failure) {
            let communicator = try Communicator.world()
            let shard: [Float] = [1, 2]
            var output: [Float] = [0, 0, 0]
            try shard.withUnsafeBufferPointer { source in
                try output.withUnsafeMutableBufferPointer { try communicator.allGather(source, into: $0) }
            }
        }
    }

    @Test("Job.run prints `zero-sft: rank 0/1 (host): error` and exits 1 when the body throws")
    func jobRunFailure() async throws {
        struct Broken: Error, CustomStringConvertible { var description: String { "the body broke" } }
        let result = await #expect(processExitsWith: .exitCode(1), observing: [\.standardErrorContent]) {
            Job.run { _ in throw Broken() }
        }
        let stderr = String(decoding: result?.standardErrorContent ?? [], as: UTF8.self)
        #expect(stderr.contains("zero-sft: rank 0/1 ("), "stderr: \(stderr)")
        #expect(stderr.contains("): the body broke"), "stderr: \(stderr)")
    }

    @Test("Job.run exits 0 after a body that returns, and with the code of runReturningExitCode")
    func jobRunSuccess() async {
        await #expect(processExitsWith: .exitCode(0)) {
            Job.run { communicator in try communicator.barrier() }
        }
        await #expect(processExitsWith: .exitCode(3)) {
            Job.runReturningExitCode { _ in 3 }
        }
    }
}
