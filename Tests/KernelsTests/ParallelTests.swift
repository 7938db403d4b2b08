import Testing
import Synchronization
@testable import Kernels

@Suite struct ParallelTests {
    /// Every item of `0..<count` is visited exactly once, in contiguous chunks no more numerous than
    /// the thread count, for counts below, at and above the thread count and with a grain.
    @Test(arguments: [1, 2, 3, 7, 64, 1001])
    func coversEveryItemOnce(count: Int) {
        let saved = BLAS.threadCount
        defer { BLAS.threadCount = saved }
        for threads in [1, 2, 3] {
            BLAS.threadCount = threads
            for grain in [1, 16] {
                let visits = UnsafeMutableBufferPointer<Int>.allocate(capacity: count)
                defer { visits.deallocate() }
                visits.initialize(repeating: 0)
                let chunks = Atomic<Int>(0)
                Parallel.forEach(count: count, grain: grain) { range in
                    chunks.add(1, ordering: .relaxed)
                    for i in range { visits[i] += 1 }
                }
                #expect(visits.allSatisfy { $0 == 1 }, "count \(count), threads \(threads), grain \(grain)")
                let n = chunks.load(ordering: .relaxed)
                #expect(n >= 1 && n <= threads && (n == 1 || count / n >= grain),
                        "\(n) chunks for count \(count), threads \(threads), grain \(grain)")
            }
        }
    }
}
