import ArgumentParser
import Collectives
import Foundation

/// `zero-sft self-test`: runs every collective on deterministic inputs and checks the result on
/// every rank against values each rank computes on its own.
struct SelfTestCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "self-test",
        abstract: "Check the MPI fabric: every collective against its expected result on every rank.",
        discussion: """
            Run it the way you run training, e.g. `launch/run -n 4 self-test` or with a hostfile. Rank 0 \
            prints one line per check and a final `self-test: N passed, M failed`; a rank whose result \
            differs prints the check, its rank, the first differing index and the expected and found \
            values to stderr. The exit status is non-zero when any check fails on any rank.
            """)

    @Option(help: "Elements per rank in the large-buffer checks.")
    var largeCount: Int = 1 << 20

    @Option(
        help: ArgumentHelp(
            "Make rank R throw an error right after the first barrier.",
            discussion: "Checks that a failing rank aborts the whole job with its message instead of leaving the others hanging.",
            valueName: "R"))
    var failOnRank: Int?

    @Flag(help: "Also all-reduce a UInt8 buffer of Int32.max + 1001 elements (2 GiB per rank) through the real chunking path.")
    var beyondInt32 = false

    @OptionGroup var collectives: CollectiveOptions

    @Flag(help: "Check before every collective that all ranks run the same one (operation, sequence number, bytes).")
    var debug = false

    @Option(help: .hidden)  // makes rank R call a different collective: the consistency check's test
    var mismatchOnRank: Int?

    func validate() throws {
        guard (1...(1 << 31)).contains(largeCount) else { throw ValidationError("--large-count must be in [1, 2^31], got \(largeCount)") }
        if let failOnRank, failOnRank < 0 {
            throw ValidationError("--fail-on-rank must be a rank (0 or more), got \(failOnRank)")
        }
        if let mismatchOnRank, mismatchOnRank < 0 {
            throw ValidationError("--mismatch-on-rank must be a rank (0 or more), got \(mismatchOnRank)")
        }
    }

    func run() throws {
        let options = self
        options.collectives.prepareProcess()
        Job.runReturningExitCode { communicator in
            try options.collectives.apply(to: communicator, checkingConsistency: options.debug)
            var selfTest = SelfTest(communicator: communicator, options: options)
            return try selfTest.run()
        }
    }
}

/// The error thrown by `--fail-on-rank`.
struct InjectedFailure: Error, CustomStringConvertible {
    var rank: Int
    var description: String { "injected failure requested by --fail-on-rank \(rank)" }
}

/// The error thrown when `--fail-on-rank` names a rank the job does not have.
struct NoSuchRank: Error, CustomStringConvertible {
    var rank: Int
    var size: Int
    var option = "--fail-on-rank"
    var description: String { "\(option) \(rank) is not a rank of this \(size)-rank job" }
}

// MARK: - Element types with a test pattern

/// An element type the self-test can fill with a pattern and reduce on its own.
fileprivate protocol SelfTestElement: CollectiveElement, Equatable, CustomStringConvertible {
    /// The pattern value for `v` in `0 ..< 97` (signed types map it to `-48 ... 48`).
    init(patternValue v: Int)
    /// The padding value.
    static var zero: Self { get }
    /// The initial contents of output buffers: outside the pattern's range where the type allows.
    static var sentinel: Self { get }
    /// `a op b`, the way MPI combines two contributions (integer sums wrap).
    static func combine(_ a: Self, _ b: Self, _ op: ReductionOperation) -> Self
}

extension SelfTestElement {
    /// The deterministic input of `rank` at `index`: small integers, so float sums are exact in any order.
    static func pattern(rank: Int, index: Int, salt: Int) -> Self {
        Self(patternValue: (index % 97 * 7 + rank * 13 + salt * 31) % 97)
    }

    /// The reduction over ranks `0 ..< size` of `pattern(rank: r, index: index, salt: salt)`.
    static func reducedPattern(size: Int, index: Int, salt: Int, _ op: ReductionOperation) -> Self {
        var result = pattern(rank: 0, index: index, salt: salt)
        for rank in 1..<max(size, 1) { result = combine(result, pattern(rank: rank, index: index, salt: salt), op) }
        return result
    }
}

extension Float: SelfTestElement {
    fileprivate static var zero: Float { 0 }
    fileprivate static var sentinel: Float { Float.nan }
    fileprivate init(patternValue v: Int) { self = Float(v - 48) }
    fileprivate static func combine(_ a: Float, _ b: Float, _ op: ReductionOperation) -> Float {
        switch op { case .sum: a + b; case .max: Swift.max(a, b); case .min: Swift.min(a, b) }
    }
}
extension Double: SelfTestElement {
    fileprivate static var zero: Double { 0 }
    fileprivate static var sentinel: Double { Double.nan }
    fileprivate init(patternValue v: Int) { self = Double(v - 48) }
    fileprivate static func combine(_ a: Double, _ b: Double, _ op: ReductionOperation) -> Double {
        switch op { case .sum: a + b; case .max: Swift.max(a, b); case .min: Swift.min(a, b) }
    }
}
extension Int32: SelfTestElement {
    fileprivate static var zero: Int32 { 0 }
    fileprivate static var sentinel: Int32 { Int32.min }
    fileprivate init(patternValue v: Int) { self = Int32(v - 48) }
    fileprivate static func combine(_ a: Int32, _ b: Int32, _ op: ReductionOperation) -> Int32 {
        switch op { case .sum: a &+ b; case .max: Swift.max(a, b); case .min: Swift.min(a, b) }
    }
}
extension Int64: SelfTestElement {
    fileprivate static var zero: Int64 { 0 }
    fileprivate static var sentinel: Int64 { Int64.min }
    fileprivate init(patternValue v: Int) { self = Int64(v - 48) }
    fileprivate static func combine(_ a: Int64, _ b: Int64, _ op: ReductionOperation) -> Int64 {
        switch op { case .sum: a &+ b; case .max: Swift.max(a, b); case .min: Swift.min(a, b) }
    }
}
extension UInt16: SelfTestElement {
    fileprivate static var zero: UInt16 { 0 }
    fileprivate static var sentinel: UInt16 { 0xFFFF }
    /// Both bytes non-zero (`0x3F01 …`, bf16 patterns near 0.5): a half-element shift shows.
    fileprivate init(patternValue v: Int) { self = UInt16(0x3F01 + 2 * v) }
    fileprivate static func combine(_ a: UInt16, _ b: UInt16, _ op: ReductionOperation) -> UInt16 {
        switch op { case .sum: a &+ b; case .max: Swift.max(a, b); case .min: Swift.min(a, b) }
    }
}
extension UInt8: SelfTestElement {
    fileprivate static var zero: UInt8 { 0 }
    fileprivate static var sentinel: UInt8 { 255 }
    /// `v mod 32`: sums over up to 8 ranks stay below 256. Open MPI 4.1's AVX reductions
    /// (`op/avx`) saturate 8-bit sums that overflow instead of wrapping (open-mpi/ompi#8045,
    /// "wontfix"), so a wrapping sum is not something MPI promises here; zero-sft never sums bytes.
    fileprivate init(patternValue v: Int) { self = UInt8(v % 32) }
    fileprivate static func combine(_ a: UInt8, _ b: UInt8, _ op: ReductionOperation) -> UInt8 {
        switch op { case .sum: a &+ b; case .max: Swift.max(a, b); case .min: Swift.min(a, b) }
    }
}

/// Wall-clock time of the timed parts of a check (the collective calls, not filling or verifying).
final class Stopwatch {
    /// The summed duration of the `time` calls, or `nil` if there were none.
    private(set) var seconds: Double? = nil

    /// Runs `body` and adds its duration.
    func time<Result>(_ body: () throws -> Result) rethrows -> Result {
        let start = ContinuousClock.now
        defer { seconds = (seconds ?? 0) + Self.seconds(since: start) }
        return try body()
    }

    static func seconds(since start: ContinuousClock.Instant) -> Double {
        (ContinuousClock.now - start).inSeconds
    }
}

/// An owned, initialised buffer that outlives the non-blocking requests using it.
fileprivate final class TestBuffer<Element: SelfTestElement> {
    let buffer: UnsafeMutableBufferPointer<Element>

    init(count: Int, _ value: (Int) -> Element) {
        buffer = .allocate(capacity: count)
        for index in 0..<count { (buffer.baseAddress! + index).initialize(to: value(index)) }
    }

    deinit { buffer.deallocate() }

    var count: Int { buffer.count }
    var readOnly: UnsafeBufferPointer<Element> { UnsafeBufferPointer(buffer) }
    func slice(_ range: Range<Int>) -> UnsafeMutableBufferPointer<Element> { UnsafeMutableBufferPointer(rebasing: buffer[range]) }

    /// The first index where the contents differ from `expected`, described, or `nil` if they all match.
    func mismatch(_ expected: (Int) -> Element) -> String? {
        var first: Int? = nil
        var differing = 0
        for index in 0..<buffer.count where buffer[index] != expected(index) {
            if first == nil { first = index }
            differing += 1
        }
        guard let first else { return nil }
        return "index \(first): expected \(expected(first)), found \(buffer[first]) (\(differing) of \(buffer.count) elements differ)"
    }
}

// MARK: - The checks

/// Runs the checks on one rank and agrees with the other ranks on each outcome.
struct SelfTest {
    let communicator: Communicator
    let options: SelfTestCommand
    private var passed = 0
    private var failed = 0

    init(communicator: Communicator, options: SelfTestCommand) {
        self.communicator = communicator
        self.options = options
    }

    var rank: Int { communicator.rank }
    var size: Int { communicator.size }

    /// Runs all checks; returns the exit code every rank agrees on.
    mutating func run() throws -> Int32 {
        try printHeader()
        let communicator = communicator
        try check("barrier") { _ in
            try communicator.barrier()
            return nil
        }
        if let failOnRank = options.failOnRank {
            guard failOnRank < size else { throw NoSuchRank(rank: failOnRank, size: size) }
            if rank == failOnRank { throw InjectedFailure(rank: rank) }
        }
        if let mismatchOnRank = options.mismatchOnRank {
            guard mismatchOnRank < size else { throw NoSuchRank(rank: mismatchOnRank, size: size, option: "--mismatch-on-rank") }
            // A programming error between ranks: this rank all-reduces two values, the others one.
            // Caught at once with --debug; without it MPI may fail, truncate or hang.
            if rank == mismatchOnRank {
                _ = try communicator.allReduce([Int64(1), 2], .sum)
            } else {
                _ = try communicator.allReduce(Int64(1), .sum)
            }
        }
        try checkAll(Float.self, salt: 0)
        try checkAll(Double.self, salt: 1)
        try checkAll(Int32.self, salt: 2)
        try checkAll(Int64.self, salt: 3)
        try checkAll(UInt8.self, salt: 4)
        try checkConvenienceForms()
        try checkZeroLengthShards()
        try checkLargeBuffers()
        try checkOverlappedRequests()
        try checkRings()
        try checkProgressHook()
        if communicator.hasProgressThread { try checkProgressThread() }
        try checkChunking()
        if options.beyondInt32 { try checkBeyondInt32() }
        if rank == 0 { print("self-test: \(passed) passed, \(failed) failed") }
        return failed == 0 ? 0 : 1
    }

    private func printHeader() throws {
        // Every rank's host name, gathered in fixed 64-byte slots: also the first all-gather.
        let names = try communicator.hostNames()
        guard rank == 0 else { return }
        let mode = communicator.isUsingMPI ? "MPI" : "no MPI (started without a launcher)"
        print("self-test: \(size) rank\(size == 1 ? "" : "s"), \(mode), on \(Communicator.describePlacement(names))")
    }

    /// Runs `body` on every rank; `body` returns a description of the first wrong element, or `nil`.
    /// A body must make all of its collective calls before it returns (also when an early result
    /// is already wrong), or the ranks fall out of step and hang.
    /// All ranks learn which ranks failed; rank 0 prints the outcome and the slowest rank's time.
    /// The time printed is that of the whole body, or of the calls timed with the stopwatch.
    private mutating func check(_ name: String, _ body: (Stopwatch) throws -> String?) throws {
        let stopwatch = Stopwatch()
        let start = ContinuousClock.now
        let problem = try body(stopwatch)
        let seconds = stopwatch.seconds ?? Stopwatch.seconds(since: start)
        if let problem {
            FileHandle.standardError.write(Data("self-test: FAIL \(name): rank \(rank), \(problem)\n".utf8))
        }
        let failures = try communicator.allGather([Int32(problem == nil ? 0 : 1)])
        let slowest = try communicator.allReduce(seconds, .max)
        let failingRanks = failures.indices.filter { failures[$0] != 0 }
        if failingRanks.isEmpty { passed += 1 } else { failed += 1 }
        guard rank == 0 else { return }
        let time = String(format: "%.1f ms", slowest * 1000)
        if failingRanks.isEmpty {
            print("ok    \(name) (\(time))")
        } else {
            print("FAIL  \(name) on rank\(failingRanks.count == 1 ? "" : "s") \(failingRanks.map(String.init).joined(separator: ",")) (\(time))")
        }
    }

    /// Broadcast, all-reduce and the sharded collectives of one element type, with a logical length
    /// that does not divide by the rank count (so the last shards carry padding).
    private mutating func checkAll<T: SelfTestElement>(_: T.Type, salt: Int) throws {
        let type = "\(T.self)"
        let communicator = communicator
        let rank = rank
        let size = size

        let root = salt % size
        let count = 1000
        try check("broadcast \(type) ×\(count) from rank \(root)") { _ in
            let buffer = TestBuffer<T>(count: count) { T.pattern(rank: rank, index: $0, salt: salt) }
            try communicator.broadcast(buffer.buffer, root: root)
            return buffer.mismatch { T.pattern(rank: root, index: $0, salt: salt) }
        }

        for op in [ReductionOperation.sum, .max, .min] {
            try check("allReduce \(type) \(op) ×1001 in place") { _ in
                let buffer = TestBuffer<T>(count: 1001) { T.pattern(rank: rank, index: $0, salt: salt) }
                try communicator.allReduce(buffer.buffer, op)
                return buffer.mismatch { T.reducedPattern(size: size, index: $0, salt: salt, op) }
            }
        }

        // A logical vector of `length` elements, sharded as `shardCount` per rank and zero-padded.
        let length = 1001
        let shardCount = (length + size - 1) / size
        let padded = shardCount * size
        let padding = padded - length
        try check("allGather \(type) \(length) as \(size)×\(shardCount) (\(padding) padding)") { _ in
            let shard = TestBuffer<T>(count: shardCount) { j in
                let global = rank * shardCount + j
                return global < length ? T.pattern(rank: rank, index: global, salt: salt) : T.zero
            }
            let output = TestBuffer<T>(count: padded) { _ in T.sentinel }
            try communicator.allGather(shard.readOnly, into: output.buffer)
            return output.mismatch { global in
                global < length ? T.pattern(rank: global / shardCount, index: global, salt: salt) : T.zero
            }
        }

        try check("allGather \(type) \(size)×\(shardCount) in place") { _ in
            let output = TestBuffer<T>(count: padded) { global in
                global / shardCount == rank ? T.pattern(rank: rank, index: global, salt: salt) : T.sentinel
            }
            let shard = UnsafeBufferPointer(output.slice(rank * shardCount..<(rank + 1) * shardCount))
            try communicator.allGather(shard, into: output.buffer)
            return output.mismatch { T.pattern(rank: $0 / shardCount, index: $0, salt: salt) }
        }

        for op in [ReductionOperation.sum, .max, .min] {
            try check("reduceScatter \(type) \(op) \(length) as \(size)×\(shardCount) (\(padding) padding)") { _ in
                let input = TestBuffer<T>(count: padded) { global in
                    global < length ? T.pattern(rank: rank, index: global, salt: salt) : T.zero
                }
                let shard = TestBuffer<T>(count: shardCount) { _ in T.sentinel }
                try communicator.reduceScatter(input.readOnly, into: shard.buffer, op)
                return shard.mismatch { j in
                    let global = rank * shardCount + j
                    return global < length ? T.reducedPattern(size: size, index: global, salt: salt, op) : T.zero
                }
            }
        }
    }

    /// The value and array forms of all-reduce and the array form of all-gather.
    private mutating func checkConvenienceForms() throws {
        let communicator = communicator
        let rank = rank
        let size = size
        try check("allReduce scalar Int64 sum, Double max, Int32 min") { _ in
            let sum = try communicator.allReduce(Int64(rank + 1), .sum)
            let largest = try communicator.allReduce(Double(rank) * 1.5, .max)
            let smallest = try communicator.allReduce(Int32(10 - rank), .min)
            if sum != Int64(size * (size + 1) / 2) { return "sum: expected \(size * (size + 1) / 2), found \(sum)" }
            if largest != Double(size - 1) * 1.5 { return "max: expected \(Double(size - 1) * 1.5), found \(largest)" }
            if smallest != Int32(10 - (size - 1)) { return "min: expected \(10 - (size - 1)), found \(smallest)" }
            return nil
        }
        try check("allReduce [Float] sum ×17") { _ in
            let values = (0..<17).map { Float.pattern(rank: rank, index: $0, salt: 9) }
            let result = try communicator.allReduce(values, .sum)
            return result.indices.first { result[$0] != Float.reducedPattern(size: size, index: $0, salt: 9, .sum) }.map {
                "index \($0): expected \(Float.reducedPattern(size: size, index: $0, salt: 9, .sum)), found \(result[$0])"
            }
        }
        try check("allGather [Int32] ×5 per rank") { _ in
            let values = (0..<5).map { Int32(rank * 100 + $0) }
            let result = try communicator.allGather(values)
            guard result.count == 5 * size else { return "count: expected \(5 * size), found \(result.count)" }
            return result.indices.first { result[$0] != Int32(($0 / 5) * 100 + $0 % 5) }.map {
                "index \($0): expected \(($0 / 5) * 100 + $0 % 5), found \(result[$0])"
            }
        }
    }

    /// A shard of zero elements: nothing moves and nothing is touched.
    private mutating func checkZeroLengthShards() throws {
        let communicator = communicator
        try check("allGather, reduceScatter and their non-blocking forms with a zero-length shard") { _ in
            let empty = TestBuffer<Float>(count: 0) { _ in 0 }
            let alsoEmpty = TestBuffer<Float>(count: 0) { _ in 0 }
            try communicator.allGather(empty.readOnly, into: alsoEmpty.buffer)
            try communicator.reduceScatter(empty.readOnly, into: alsoEmpty.buffer, .sum)
            let gather = try communicator.startAllGather(empty.readOnly, into: alsoEmpty.buffer)
            let scatter = try communicator.startReduceScatter(empty.readOnly, into: alsoEmpty.buffer, .sum)
            try gather.wait()
            guard try scatter.test() else { return "an empty reduce-scatter request was not complete" }
            return nil
        }
    }

    /// Buffers of `--large-count` elements per rank, timed.
    private mutating func checkLargeBuffers() throws {
        let communicator = communicator
        let rank = rank
        let size = size
        let count = options.largeCount
        try check("allReduce Float sum ×\(count) (large)") { stopwatch in
            let buffer = TestBuffer<Float>(count: count) { Float.pattern(rank: rank, index: $0, salt: 11) }
            try stopwatch.time { try communicator.allReduce(buffer.buffer, .sum) }
            return buffer.mismatch { Float.reducedPattern(size: size, index: $0, salt: 11, .sum) }
        }
        try check("allGather Float \(size)×\(count) (large)") { stopwatch in
            let shard = TestBuffer<Float>(count: count) { Float.pattern(rank: rank, index: rank * count + $0, salt: 12) }
            let output = TestBuffer<Float>(count: count * size) { _ in .sentinel }
            try stopwatch.time { try communicator.allGather(shard.readOnly, into: output.buffer) }
            return output.mismatch { Float.pattern(rank: $0 / count, index: $0, salt: 12) }
        }
        try check("reduceScatter Float sum \(size)×\(count) (large)") { stopwatch in
            let input = TestBuffer<Float>(count: count * size) { Float.pattern(rank: rank, index: $0, salt: 13) }
            let shard = TestBuffer<Float>(count: count) { _ in .sentinel }
            try stopwatch.time { try communicator.reduceScatter(input.readOnly, into: shard.buffer, .sum) }
            return shard.mismatch { Float.reducedPattern(size: size, index: rank * count + $0, salt: 13, .sum) }
        }
    }

    /// Four non-blocking collectives in flight together, completed by polling and in another order.
    private mutating func checkOverlappedRequests() throws {
        let communicator = communicator
        let rank = rank
        let size = size
        try check("overlapped startAllGather ×2 (one in place) and startReduceScatter ×2, test() and wait() twice") { _ in
            let count = 4099
            let gatherShard = TestBuffer<Double>(count: count) { Double.pattern(rank: rank, index: rank * count + $0, salt: 21) }
            let gatherOutput = TestBuffer<Double>(count: count * size) { _ in .sentinel }
            let scatterInput = TestBuffer<Float>(count: count * size) { Float.pattern(rank: rank, index: $0, salt: 22) }
            let scatterShard = TestBuffer<Float>(count: count) { _ in .sentinel }
            let inPlaceOutput = TestBuffer<Int32>(count: count * size) { global in
                global / count == rank ? Int32.pattern(rank: rank, index: global, salt: 23) : .sentinel
            }
            let maxInput = TestBuffer<Int64>(count: count * size) { Int64.pattern(rank: rank, index: $0, salt: 24) }
            let maxShard = TestBuffer<Int64>(count: count) { _ in .sentinel }

            let gather = try communicator.startAllGather(gatherShard.readOnly, into: gatherOutput.buffer)
            let scatter = try communicator.startReduceScatter(scatterInput.readOnly, into: scatterShard.buffer, .sum)
            let inPlace = try communicator.startAllGather(
                UnsafeBufferPointer(inPlaceOutput.slice(rank * count..<(rank + 1) * count)), into: inPlaceOutput.buffer)
            let maximum = try communicator.startReduceScatter(maxInput.readOnly, into: maxShard.buffer, .max)
            var polls = 0
            while try !scatter.test() { polls += 1 }
            try maximum.wait()
            try gather.wait()
            try inPlace.wait()
            try gather.wait()  // idempotent
            guard try scatter.test(), try inPlace.test() else { return "a completed request tested as incomplete" }
            if let problem = gatherOutput.mismatch({ Double.pattern(rank: $0 / count, index: $0, salt: 21) }) {
                return "allGather Double: \(problem)"
            }
            if let problem = scatterShard.mismatch({ Float.reducedPattern(size: size, index: rank * count + $0, salt: 22, .sum) }) {
                return "reduceScatter Float sum: \(problem)"
            }
            if let problem = inPlaceOutput.mismatch({ Int32.pattern(rank: $0 / count, index: $0, salt: 23) }) {
                return "in-place allGather Int32: \(problem)"
            }
            if let problem = maxShard.mismatch({ Int64.reducedPattern(size: size, index: rank * count + $0, salt: 24, .max) }) {
                return "reduceScatter Int64 max: \(problem)"
            }
            return nil
        }
    }

    /// The ring reduce-scatter of ZeRO's gradients: blocking with padding, and three rings in flight
    /// at once, driven by polling every one of them (as `ZeroEngine` does) beside an all-gather.
    private mutating func checkRings() throws {
        let communicator = communicator
        let rank = rank
        let size = size
        let length = 1001
        let shardCount = (length + size - 1) / size
        try check("ring reduceScatter Float sum \(length) as \(size)×\(shardCount), result in block \(rank)") { _ in
            let buffer = TestBuffer<Float>(count: shardCount * size) { global in
                global < length ? Float.pattern(rank: rank, index: global, salt: 25) : 0
            }
            let scratch = TestBuffer<Float>(count: shardCount) { _ in .sentinel }
            // The ring holds raw pointers: keep the buffers alive until its result has been read.
            return try withExtendedLifetime((buffer, scratch)) {
                let ring = try communicator.startRingReduceScatter(buffer.buffer, scratch: scratch.buffer)
                try ring.wait()
                guard ring.isComplete, ring.step == size - 1 else { return "ring ended at step \(ring.step) of \(size - 1)" }
                for j in 0..<shardCount {
                    let global = rank * shardCount + j
                    let expected = global < length ? Float.reducedPattern(size: size, index: global, salt: 25, .sum) : 0
                    if ring.result[j] != expected { return "index \(global): expected \(expected), found \(ring.result[j])" }
                }
                return nil
            }
        }
        try check("three rings (Float, Double, Float) and an allGather in flight, polled together") { _ in
            let counts = [4099, 17, 1]
            let floats = counts.enumerated().map { n, count in
                TestBuffer<Float>(count: count * size) { Float.pattern(rank: rank, index: $0, salt: 26 + n) }
            }
            let scratch = counts.map { count in TestBuffer<Float>(count: count) { _ in .sentinel } }
            let doubles = TestBuffer<Double>(count: 999 * size) { Double.pattern(rank: rank, index: $0, salt: 29) }
            let doubleScratch = TestBuffer<Double>(count: 999) { _ in .sentinel }
            let shard = TestBuffer<Int32>(count: 5) { Int32.pattern(rank: rank, index: rank * 5 + $0, salt: 30) }
            let gathered = TestBuffer<Int32>(count: 5 * size) { _ in .sentinel }
            defer { withExtendedLifetime((floats, scratch, doubles, doubleScratch, shard, gathered)) {} }
            let first = try communicator.startRingReduceScatter(floats[0].buffer, scratch: scratch[0].buffer)
            let gather = try communicator.startAllGather(shard.readOnly, into: gathered.buffer)
            let second = try communicator.startRingReduceScatter(doubles.buffer, scratch: doubleScratch.buffer)
            let third = try communicator.startRingReduceScatter(floats[1].buffer, scratch: scratch[1].buffer)
            let fourth = try communicator.startRingReduceScatter(floats[2].buffer, scratch: scratch[2].buffer)
            while true {
                let done = [try first.test(), try second.test(), try third.test(), try fourth.test(), try gather.test()]
                if !done.contains(false) { break }
                yieldProcessor()
            }
            for (n, ring) in [first, third, fourth].enumerated() {
                for j in 0..<counts[n] where ring.result[j] != Float.reducedPattern(size: size, index: rank * counts[n] + j, salt: 26 + n, .sum) {
                    return "Float ring \(n), block index \(j): found \(ring.result[j])"
                }
            }
            for j in 0..<999 where second.result[j] != Double.reducedPattern(size: size, index: rank * 999 + j, salt: 29, .sum) {
                return "Double ring, block index \(j): found \(second.result[j])"
            }
            return gathered.mismatch { Int32.pattern(rank: $0 / 5, index: $0, salt: 30) }.map { "allGather: \($0)" }
        }
    }

    /// The progress hook (``Communicator/progressIfDue(_:)``): a ring and an all-gather started, then
    /// compute that calls the hook between its pieces completes them without any wait; with the hook
    /// off the ring does not move (it advances only when its rank tests it).
    private mutating func checkProgressHook() throws {
        let communicator = communicator
        let rank = rank
        let size = size
        try check("progress hook: a ring and an allGather in flight complete during compute, without a wait") { _ in
            let count = 4099
            let floats = TestBuffer<Float>(count: count * size) { Float.pattern(rank: rank, index: $0, salt: 40) }
            let scratch = TestBuffer<Float>(count: count) { _ in .sentinel }
            let shard = TestBuffer<Int32>(count: 7) { Int32.pattern(rank: rank, index: rank * 7 + $0, salt: 41) }
            let gathered = TestBuffer<Int32>(count: 7 * size) { _ in .sentinel }
            defer { withExtendedLifetime((floats, scratch, shard, gathered)) {} }
            let saved = communicator.progressInterval
            defer { communicator.progressInterval = saved }
            // The all-gather first: under --debug starting a collective runs a consistency check whose
            // wait polls every ring in flight, which would move a ring started before it.
            let gather = try communicator.startAllGather(shard.readOnly, into: gathered.buffer)
            let ring = try communicator.startRingReduceScatter(floats.buffer, scratch: scratch.buffer)
            var sink: Float = 0
            /// Some compute: a few microseconds of arithmetic the hook runs between.
            func compute() { for i in 0..<2_000 { sink += Float(i & 7) * 0.5 } }
            func advance() throws { _ = try ring.test(); _ = try gather.test() }
            // Hook off: 20 ms of compute moves nothing of the ring.
            communicator.progressInterval = nil
            let idle = ContinuousClock.now
            while ContinuousClock.now - idle < .milliseconds(20) {
                compute()
                try communicator.progressIfDue(advance)
            }
            // (A progress thread, `--progress-thread`, moves it regardless: checkProgressThread.)
            if size > 1, !communicator.hasProgressThread, ring.isComplete { return "the ring completed with the hook off" }
            // Hook on (every 100 µs): compute alone completes both.
            communicator.progressInterval = .microseconds(100)
            let before = communicator.counters
            let start = ContinuousClock.now
            while !(ring.isComplete && gather.isComplete) {
                compute()
                try communicator.progressIfDue(advance)
                if ContinuousClock.now - start > .seconds(min(10, communicator.collectiveTimeout)) {
                    return "not complete after \(min(10, communicator.collectiveTimeout)) s of compute with the hook (ring step \(ring.step))"
                }
            }
            let spent = communicator.counters.subtracting(before)
            if spent.waitSeconds != 0 { return "waited \(spent.waitSeconds) s: the hook must not wait" }
            if size > 1, !communicator.hasProgressThread, spent.progressPasses == 0 { return "no progress pass counted" }
            if sink.isNaN { return "compute produced NaN" }
            for j in 0..<count where ring.result[j] != Float.reducedPattern(size: size, index: rank * count + j, salt: 40, .sum) {
                return "ring, block index \(j): found \(ring.result[j])"
            }
            return gathered.mismatch { Int32.pattern(rank: $0 / 7, index: $0, salt: 41) }.map { "allGather: \($0)" }
        }
    }

    /// The progress thread (`--progress-thread`, ``Communicator/startProgressThread()``): a ring and
    /// an all-gather started, then compute that makes no MPI call at all (the hook off) sees both
    /// complete, with the right results, without a wait: the communication thread alone moved them,
    /// the ring's additions included.
    private mutating func checkProgressThread() throws {
        let communicator = communicator
        let rank = rank
        let size = size
        try check("progress thread: a ring and an allGather in flight complete during compute with no MPI call from it") { _ in
            let count = 40_961
            let floats = TestBuffer<Float>(count: count * size) { Float.pattern(rank: rank, index: $0, salt: 42) }
            let scratch = TestBuffer<Float>(count: count) { _ in .sentinel }
            let shard = TestBuffer<Int32>(count: 9_999) { Int32.pattern(rank: rank, index: rank * 9_999 + $0, salt: 43) }
            let gathered = TestBuffer<Int32>(count: 9_999 * size) { _ in .sentinel }
            defer { withExtendedLifetime((floats, scratch, shard, gathered)) {} }
            let saved = communicator.progressInterval
            communicator.progressInterval = nil
            defer { communicator.progressInterval = saved }
            let gather = try communicator.startAllGather(shard.readOnly, into: gathered.buffer)
            let ring = try communicator.startRingReduceScatter(floats.buffer, scratch: scratch.buffer)
            let before = communicator.counters
            var sink: Float = 0
            let start = ContinuousClock.now
            // `isComplete` reads the operations' state under their locks; it calls no MPI function.
            while !(ring.isComplete && gather.isComplete) {
                for i in 0..<2_000 { sink += Float(i & 7) * 0.5 }
                if ContinuousClock.now - start > .seconds(min(10, communicator.collectiveTimeout)) {
                    return "not complete after \(min(10, communicator.collectiveTimeout)) s of compute with the progress thread (ring step \(ring.step))"
                }
            }
            let spent = communicator.counters.subtracting(before)
            if spent.waitSeconds != 0 || spent.progressPasses != 0 { return "this thread waited or ran the hook: \(spent)" }
            if size > 1, spent.progressThreadPasses == 0 { return "no pass of the progress thread counted" }
            if sink.isNaN { return "compute produced NaN" }
            // Complete: the owner's own test returns at once and agrees.
            if try !ring.test() || !gather.test() { return "test() disagrees with isComplete" }
            for j in 0..<count where ring.result[j] != Float.reducedPattern(size: size, index: rank * count + j, salt: 42, .sum) {
                return "ring, block index \(j): found \(ring.result[j])"
            }
            return gathered.mismatch { Int32.pattern(rank: $0 / 9_999, index: $0, salt: 43) }.map { "allGather: \($0)" }
        }
    }

    /// The chunked paths, exercised with small buffers by lowering `maximumBytesPerCall` to 64.
    private mutating func checkChunking() throws {
        let communicator = communicator
        let rank = rank
        let size = size
        let limit = 64
        let saved = communicator.maximumBytesPerCall
        communicator.maximumBytesPerCall = limit
        defer { communicator.maximumBytesPerCall = saved }
        let count = 203  // not a multiple of any piece length
        try check("chunked (≤\(limit) bytes per call) broadcast and allReduce Double ×\(count)") { _ in
            let broadcast = TestBuffer<Double>(count: count) { Double.pattern(rank: rank, index: $0, salt: 31) }
            let reduced = TestBuffer<Double>(count: count) { Double.pattern(rank: rank, index: $0, salt: 32) }
            try communicator.broadcast(broadcast.buffer, root: size - 1)
            try communicator.allReduce(reduced.buffer, .min)
            if let problem = broadcast.mismatch({ Double.pattern(rank: size - 1, index: $0, salt: 31) }) {
                return "broadcast: \(problem)"
            }
            return reduced.mismatch { Double.reducedPattern(size: size, index: $0, salt: 32, .min) }.map { "allReduce: \($0)" }
        }
        try check("chunked (≤\(limit) bytes per call) allGather Float \(size)×\(count), copied and in place") { _ in
            let shard = TestBuffer<Float>(count: count) { Float.pattern(rank: rank, index: rank * count + $0, salt: 33) }
            let output = TestBuffer<Float>(count: count * size) { _ in .sentinel }
            let inPlace = TestBuffer<Float>(count: count * size) { $0 / count == rank ? Float.pattern(rank: rank, index: $0, salt: 34) : .sentinel }
            try communicator.allGather(shard.readOnly, into: output.buffer)
            try communicator.allGather(UnsafeBufferPointer(inPlace.slice(rank * count..<(rank + 1) * count)), into: inPlace.buffer)
            if let problem = output.mismatch({ Float.pattern(rank: $0 / count, index: $0, salt: 33) }) { return "copied: \(problem)" }
            return inPlace.mismatch { Float.pattern(rank: $0 / count, index: $0, salt: 34) }.map { "in place: \($0)" }
        }
        try check("chunked (≤\(limit) bytes per call) startAllGather UInt16 \(size)×\(count) in place (--param-dtype bf16's patterns)") { _ in
            let all = TestBuffer<UInt16>(count: count * size) { $0 / count == rank ? UInt16.pattern(rank: rank, index: $0, salt: 39) : .sentinel }
            try communicator.startAllGather(UnsafeBufferPointer(all.slice(rank * count..<(rank + 1) * count)), into: all.buffer).wait()
            return all.mismatch { UInt16.pattern(rank: $0 / count, index: $0, salt: 39) }
        }
        try check("chunked (≤\(limit) bytes per call) reduceScatter UInt8 sum \(size)×\(count)") { _ in
            let input = TestBuffer<UInt8>(count: count * size) { UInt8.pattern(rank: rank, index: $0, salt: 35) }
            let shard = TestBuffer<UInt8>(count: count) { _ in .sentinel }
            try communicator.reduceScatter(input.readOnly, into: shard.buffer, .sum)
            return shard.mismatch { UInt8.reducedPattern(size: size, index: rank * count + $0, salt: 35, .sum) }
        }
        try check("chunked (≤\(limit) bytes per call) ring reduceScatter Double \(size)×\(count)") { _ in
            let buffer = TestBuffer<Double>(count: count * size) { Double.pattern(rank: rank, index: $0, salt: 38) }
            let scratch = TestBuffer<Double>(count: count) { _ in .sentinel }
            try communicator.ringReduceScatter(buffer.buffer, scratch: scratch.buffer)
            let block = buffer.slice(rank * count..<(rank + 1) * count)
            for j in 0..<count where block[j] != Double.reducedPattern(size: size, index: rank * count + j, salt: 38, .sum) {
                return "index \(rank * count + j): expected \(Double.reducedPattern(size: size, index: rank * count + j, salt: 38, .sum)), found \(block[j])"
            }
            return nil
        }
        try check("chunked (≤\(limit) bytes per call) startAllGather Int64 and startReduceScatter Float max, overlapped") { _ in
            let shard = TestBuffer<Int64>(count: count) { Int64.pattern(rank: rank, index: rank * count + $0, salt: 36) }
            let output = TestBuffer<Int64>(count: count * size) { _ in .sentinel }
            let input = TestBuffer<Float>(count: count * size) { Float.pattern(rank: rank, index: $0, salt: 37) }
            let reduced = TestBuffer<Float>(count: count) { _ in .sentinel }
            let gather = try communicator.startAllGather(shard.readOnly, into: output.buffer)
            let scatter = try communicator.startReduceScatter(input.readOnly, into: reduced.buffer, .max)
            try scatter.wait()
            try gather.wait()
            if let problem = output.mismatch({ Int64.pattern(rank: $0 / count, index: $0, salt: 36) }) { return "allGather: \(problem)" }
            return reduced.mismatch { Float.reducedPattern(size: size, index: rank * count + $0, salt: 37, .max) }
                .map { "reduceScatter: \($0)" }
        }
    }

    /// A real all-reduce past 2^31 elements (opt-in: 2 GiB per rank).
    private mutating func checkBeyondInt32() throws {
        let communicator = communicator
        let rank = rank
        let size = size
        let count = Int(Int32.max) + 1001
        try check("allReduce UInt8 sum ×\(count) (beyond Int32.max)") { stopwatch in
            let buffer = TestBuffer<UInt8>(count: count) { UInt8.pattern(rank: rank, index: $0, salt: 41) }
            try stopwatch.time { try communicator.allReduce(buffer.buffer, .sum) }
            return buffer.mismatch { UInt8.reducedPattern(size: size, index: $0, salt: 41, .sum) }
        }
    }
}
