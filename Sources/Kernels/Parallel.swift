import Dispatch
import Synchronization

/// Splits a kernel's independent work across the rank's threads: the non-gemm kernels' counterpart
/// of OpenBLAS's own threading.
///
/// A rank uses ``threadCount`` threads (``BLAS/threadCount``, from `OPENBLAS_NUM_THREADS`), so
/// ranks × threads ≤ cores holds for these kernels as it does for gemm. The work runs on libdispatch's
/// global pool (`DispatchQueue.concurrentPerform`, whose width is the host's active CPUs); with one
/// thread the body runs inline on the caller, with no dispatch at all.
///
/// Results never depend on the thread count: every kernel splits its work into pieces whose
/// arithmetic is fixed (rows, heads, fixed-size blocks), and only which thread runs a piece varies.
public enum Parallel {
    /// Threads a kernel splits its work over: the BLAS thread count.
    public static var threadCount: Int { BLAS.threadCount }

    /// Calls `body` on contiguous, disjoint subranges that together cover `0..<count`, at most
    /// ``threadCount`` of them at once, each at least `grain` items long (except when `count` is
    /// smaller); returns when every call has returned. `body` must only write what its range owns.
    ///
    /// - Parameters:
    ///   - count: items (rows, heads, elements: the caller's unit).
    ///   - grain: the fewest items worth a thread of their own (below that, fewer chunks).
    public static func forEach(count: Int, grain: Int = 1, _ body: (Range<Int>) -> Void) {
        guard count > 0 else { return }
        let chunks = min(threadCount, max(1, count / max(grain, 1)))
        if chunks <= 1 {
            body(0..<count)
            return
        }
        withoutActuallyEscaping(body) { body in
            // The chunks write disjoint ranges the caller owns; the caller waits for all of them.
            let work = UncheckedWork(body: body)
            DispatchQueue.concurrentPerform(iterations: chunks) { chunk in
                work.body((count * chunk / chunks)..<(count * (chunk + 1) / chunks))
            }
        }
    }

    /// Calls `body(task, worker)` once for every task in `0..<count`, handing the tasks out one at a
    /// time, in order, to at most `workers` threads (`worker` in `0..<workers` names the thread, for
    /// per-thread scratch); returns when every call has returned. For tasks of unequal cost (attention
    /// over segments of different lengths): list the costly ones first and the threads balance the rest.
    /// `body` must only write what its task owns (and its worker's scratch).
    public static func forEachTask(count: Int, workers: Int = threadCount, _ body: (_ task: Int, _ worker: Int) -> Void) {
        guard count > 0 else { return }
        let workers = min(max(workers, 1), count)
        if workers == 1 {
            for task in 0..<count { body(task, 0) }
            return
        }
        let next = Atomic<Int>(0)
        withoutActuallyEscaping(body) { body in
            let work = UncheckedTask(body: body)
            DispatchQueue.concurrentPerform(iterations: workers) { worker in
                while true {
                    let task = next.add(1, ordering: .relaxed).oldValue
                    if task >= count { break }
                    work.body(task, worker)
                }
            }
        }
    }

    /// Runs `body(threads)` with OpenBLAS limited to one thread per call, `threads` being the
    /// rank's thread count before the call; restores it afterwards. Kernels that issue many small
    /// gemms from several threads at once (attention's per-head products) call them inside: with its
    /// own thread count above one, every OpenBLAS call past 64³ multiply-adds would hand work to the
    /// same thread pool, serialising the callers.
    /// The corresponding C function is `openblas_set_num_threads`.
    public static func withSingleThreadedBLAS<R>(_ body: (_ threads: Int) throws -> R) rethrows -> R {
        let threads = BLAS.threadCount
        if threads <= 1 { return try body(1) }
        BLAS.threadCount = 1
        defer { BLAS.threadCount = threads }
        return try body(threads)
    }

    private struct UncheckedWork: @unchecked Sendable {
        let body: (Range<Int>) -> Void
    }

    private struct UncheckedTask: @unchecked Sendable {
        let body: (Int, Int) -> Void
    }
}
