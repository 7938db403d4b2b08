import Foundation
import Synchronization
import Testing
@testable import Kernels
#if canImport(Glibc)
import Glibc
#endif

/// Deliveries of the test's SIGUSR2 handler (a global: a C signal handler captures nothing).
private let deliveries = Atomic<Int>(0)

/// Signals sent at a thread while oneDNN's (or BLIS's) gemm runs must not corrupt memory
/// (``SignalDeferral``): oneDNN 2.6.3's JIT gemm kernels point `rsp` into the heap, so a signal frame
/// pushed there corrupted the heap (uxlfoundation/oneDNN#4845) — a SmolLM2 run stopped by SIGTERM
/// aborted in `free` 5 times in 6. Here a second thread sends SIGUSR2 (one of the signals zero-sft
/// handles, given a no-op handler for the test) to the gemm thread every 20 µs while it runs
/// SmolLM2-shaped products (512 × 1536 × 576, the JIT kernels' path) at 1 and 2 threads; every product
/// must equal the one computed before, bit for bit, the heap must survive a round of allocations, and
/// the signals must have been delivered (between the products). Without the deferral this test
/// process aborts ("corrupted size vs. prev_size", or a trap on a corrupted object).
@Suite(.serialized) struct SignalDeferralTests {
    @Test func signalsAtAGemmThreadAreDeferredPastTheLibraryCall() throws {
        var previous = sigaction()
        var action = sigaction()
        action.__sigaction_handler.sa_handler = { _ in deliveries.add(1, ordering: .relaxed) }
        sigemptyset(&action.sa_mask)
        action.sa_flags = SA_RESTART
        sigaction(SIGUSR2, &action, &previous)
        defer { sigaction(SIGUSR2, &previous, nil) }
        // The test runs on a pool thread that blocks every signal: unblock SIGUSR2 here (the thread the
        // signals are sent at), as a rank's main thread has it.
        var usr2 = sigset_t(), mask = sigset_t()
        sigemptyset(&usr2)
        sigaddset(&usr2, SIGUSR2)
        pthread_sigmask(SIG_UNBLOCK, &usr2, &mask)
        defer { pthread_sigmask(SIG_SETMASK, &mask, nil) }

        let (m, n, k) = (512, 1536, 576)
        let a = (0..<(m * k)).map { Float(($0 * 7919) % 1000) / 1000 - 0.5 }
        let b = (0..<(k * n)).map { Float(($0 * 104_729) % 1000) / 1000 - 0.5 }
        var products: [(String, (UnsafeMutablePointer<Float>) -> Void)] = []
        for library in [BLAS.Library.onednn, .blis] {
            guard let backend = try? BLAS.Backend.load(library) else {
                print("SignalDeferralTests: \(library) is not installed here, skipped")
                continue
            }
            for threads in [1, 2] {
                products.append(("\(library), \(threads) thread(s)", { c in
                    backend.setThreads(threads)
                    backend.gemm(transposeA: false, transposeB: false, m: m, n: n, k: k, a: a, lda: k, b: b, ldb: n, c: c, ldc: n)
                }))
            }
        }
        if let bf16 = try? BLAS.loadBF16Gemm() {
            products.append(("oneDNN bf16", { c in
                bf16.gemm(transposeA: false, transposeB: false, m: m, n: n, k: k, alpha: 1, a: a, lda: k, b: b, ldb: n,
                          beta: 0, c: c, ldc: n)
            }))
        }
        guard !products.isEmpty else {
            print("SignalDeferralTests: neither oneDNN nor BLIS is installed here, nothing to check")
            return
        }

        let target = pthread_self()
        let stop = Atomic<Bool>(false)
        for (name, product) in products {
            var reference = [Float](repeating: 0, count: m * n)
            reference.withUnsafeMutableBufferPointer { product($0.baseAddress!) }
            let before = deliveries.load(ordering: .relaxed)
            stop.store(false, ordering: .relaxed)
            let sender = Thread {
                while !stop.load(ordering: .relaxed) {
                    pthread_kill(target, SIGUSR2)
                    usleep(20)
                }
            }
            sender.start()
            var mismatches = 0
            for _ in 0..<30 {
                var c = [Float](repeating: .nan, count: m * n)
                c.withUnsafeMutableBufferPointer { product($0.baseAddress!) }
                mismatches += zip(c, reference).filter { $0.bitPattern != $1.bitPattern }.count
            }
            stop.store(true, ordering: .relaxed)
            while !sender.isFinished { usleep(100) }
            // glibc checks chunk headers as they are allocated and freed.
            var churn: [[Float]] = []
            for size in stride(from: 1, to: 40_000, by: 397) { churn.append([Float](repeating: 1, count: size)) }
            churn.removeAll()
            let delivered = deliveries.load(ordering: .relaxed) - before
            #expect(mismatches == 0, "\(name): \(mismatches) elements differ from the product computed without signals")
            #expect(delivered > 0, "\(name): no SIGUSR2 was delivered during the products")
            print("SignalDeferralTests: \(name): 30 products under SIGUSR2 every 20 µs, \(delivered) delivered, results bitwise equal")
        }
    }
}
