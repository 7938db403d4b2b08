import Dispatch

/// Splits a kernel's independent work across the rank's threads: the non-gemm kernels' counterpart
/// of OpenBLAS's own threading.
///
/// A rank uses ``threadCount`` threads (``BLAS/threadCount``, from `OPENBLAS_NUM_THREADS`), so
/// ranks × threads ≤ cores holds for these kernels as it does for gemm. The work runs on libdispatch's
/// global pool (`DispatchQueue.concurrentPerform`, whose width is the host's active CPUs); with one
/// thread the body runs inline on the caller, with no dispatch at all.
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

    private struct UncheckedWork: @unchecked Sendable {
        let body: (Range<Int>) -> Void
    }
}
