import Glibc

/// The output projection and cross-entropy, fused, evaluated only where a label is supervised.
///
/// Shapes: `hidden (N, C)` (after the final norm), `weight (V, C)`, `targets (N)` with `-100` where a
/// position carries no label. For the `M` supervised positions, in chunks of ``chunkRows`` rows:
/// `logits = h · Wᵀ` `(rows, V)`, `ℓ = logsumexp(logits) − logits[target]`; with `scale` = 1 / (global
/// supervised count), `dlogits = scale · (softmax(logits) − onehot(target))`, then
/// `dhidden[row] = dlogits · W` and `dweight += dlogitsᵀ · h`. Positions without a label cost nothing:
/// on CPU that is most of what SFT saves. Only `chunkRows × V` logits exist at a time.
public enum Classifier {
    public static let chunkRows = 512

    /// The summed negative log-likelihood over supervised positions and their count.
    public struct Result: Sendable {
        public var lossSum: Double
        public var count: Int
    }

    /// The chunk buffers of ``forwardBackward(hidden:weight:targets:vocabulary:channels:scale:dhidden:dweight:workspace:progress:)``,
    /// kept between calls by their owner (the model: one per ``DecoderModel``).
    ///
    /// Floats: the gathered rows `(rows, C)`, their `logits (rows, V)` (rows ``logitsStride(vocabulary:)``
    /// floats apart) and the rows' `dhidden (rows, C)`,
    /// `rows` the largest chunk asked for so far (at most ``chunkRows``); they grow and never shrink.
    /// Allocated per call, the `rows × V` logits (100 MB for SmolLM2 at 512 rows) were a fresh map each
    /// micro-batch, whose page faults the classifier's first gemm paid: it ran at 55–70% of the speed of
    /// the head's two other products (docs/benchmarks.md). ``MemoryPlanner`` counts them as held.
    public final class Workspace {
        private var gathered = FloatBuffer(count: 0), logits = FloatBuffer(count: 0), dgathered = FloatBuffer(count: 0)

        public init() {}

        /// Bytes held.
        public var bytes: Int { gathered.bytes + logits.bytes + dgathered.bytes }

        /// Grows the buffers to hold `rows` rows of `V` logits and `C` channels.
        func reserve(rows: Int, vocabulary v: Int, channels c: Int) {
            if gathered.count < rows * c { gathered = FloatBuffer(count: rows * c) }
            if logits.count < rows * logitsStride(vocabulary: v) { logits = FloatBuffer(count: rows * logitsStride(vocabulary: v)) }
            if dgathered.count < rows * c { dgathered = FloatBuffer(count: rows * c) }
        }

        /// Runs `body` with the three buffers, each at least the size of the last ``reserve(rows:vocabulary:channels:)``.
        func with<R>(_ body: (_ gathered: UnsafeMutablePointer<Float>, _ logits: UnsafeMutablePointer<Float>,
                              _ dgathered: UnsafeMutablePointer<Float>) -> R) -> R {
            body(gathered.pointer.baseAddress!, logits.pointer.baseAddress!, dgathered.pointer.baseAddress!)
        }
    }

    /// The row stride of the logits chunk, in floats: `V`, or `V + 32` where `V` is a multiple of 256
    /// (``BLAS/paddedStride(columns:)``). The weight gradient `dW += dlogitsᵀ · h` reads the chunk down its
    /// columns: at SmolLM2's V = 49,152 (192 KiB rows) oneDNN 2.6 ran it at 231.6 GFLOP/s on one Zen 5
    /// core, at 250.6 with rows of 49,184 (the forward and `dhidden` products unchanged: 212–214, 245–247).
    public static func logitsStride(vocabulary v: Int) -> Int { BLAS.paddedStride(columns: v) }

    /// Softmax rows handed to the rank's threads between two calls of the progress hook (about 1 ms
    /// of work for SmolLM2's 49,152-wide rows on two threads).
    public static let rowsPerProgress = 32

    /// Computes the loss and, when `dhidden` and `dweight` are given, its gradients.
    ///
    /// `dhidden` is overwritten at supervised rows and zeroed elsewhere; `dweight` accumulates.
    /// `workspace` holds the chunk buffers (nil: allocated for this call and freed on return).
    /// Each chunk's softmax rows are split over the rank's threads (``Parallel/forEach(count:grain:_:)``),
    /// each row's arithmetic the same whichever thread runs it, and the rows' losses are summed in row
    /// order, so the result does not depend on the thread count.
    /// `progress` is called between the matrix products and after every ``rowsPerProgress`` softmax rows
    /// (the model's progress hook, `UnitStore.progressInFlight()`: communication in flight moves during
    /// the head's three large products), on the calling thread; it must not touch these buffers.
    @discardableResult
    public static func forwardBackward(
        hidden: UnsafeBufferPointer<Float>,
        weight: UnsafeBufferPointer<Float>,
        targets: UnsafeBufferPointer<Int32>,
        vocabulary v: Int, channels c: Int,
        scale: Float,
        dhidden: UnsafeMutableBufferPointer<Float>?,
        dweight: UnsafeMutableBufferPointer<Float>?,
        workspace: Workspace? = nil,
        progress: () -> Void = {}
    ) -> Result {
        let n = targets.count
        precondition(hidden.count >= n * c && weight.count == v * c, "Classifier: buffers do not fit (N \(n), V \(v), C \(c))")
        if let dhidden {
            precondition(dhidden.count >= n * c, "Classifier: dhidden too small")
            dhidden.baseAddress.map { $0.update(repeating: 0, count: n * c) }
        }
        if let dweight { precondition(dweight.count == v * c, "Classifier: dweight has \(dweight.count) elements, expected \(v * c)") }
        var rows: [Int] = []
        for t in 0..<n where targets[t] != -100 {
            precondition(targets[t] >= 0 && Int(targets[t]) < v, "Classifier: label \(targets[t]) at position \(t) outside the vocabulary of \(v)")
            rows.append(t)
        }
        guard !rows.isEmpty else { return Result(lossSum: 0, count: 0) }
        let chunk = min(chunkRows, rows.count)
        let buffers = workspace ?? Workspace()
        buffers.reserve(rows: chunk, vocabulary: v, channels: c)
        let gradients = dhidden != nil || dweight != nil
        let ldz = logitsStride(vocabulary: v)
        var rowLoss = [Double](repeating: 0, count: chunk)
        let lossSum = buffers.with { x, z, dx in
            let h = hidden.baseAddress!, w = weight.baseAddress!
            var lossSum: Double = 0
            var first = 0
            while first < rows.count {
                let count = min(chunk, rows.count - first)
                for r in 0..<count { (x + r * c).update(from: h + rows[first + r] * c, count: c) }
                BLAS.gemm(transposeA: false, transposeB: true, m: count, n: v, k: c,
                          a: x, lda: c, b: w, ldb: c, c: z, ldc: ldz)
                progress()
                rowLoss.withUnsafeMutableBufferPointer { losses in
                    let loss = losses.baseAddress!
                    var r0 = 0
                    while r0 < count {
                        let r1 = min(r0 + rowsPerProgress, count)
                        Parallel.forEach(count: r1 - r0) { part in
                            for r in (r0 + part.lowerBound)..<(r0 + part.upperBound) {
                                let row = z + r * ldz
                                let target = Int(targets[rows[first + r]])
                                let targetLogit = row[target]
                                let maximum = VectorMath.maximum(row, count: v)
                                let sum = VectorMath.exponentiate(row, count: v, shift: maximum)
                                loss[r] = Double(maximum + logf(sum) - targetLogit)
                                if gradients {
                                    VectorMath.scale(row, count: v, by: scale / sum)
                                    row[target] -= scale
                                }
                            }
                        }
                        progress()
                        r0 = r1
                    }
                    for r in 0..<count { lossSum += loss[r] }
                }
                if let dhidden {
                    BLAS.gemm(transposeA: false, transposeB: false, m: count, n: c, k: v,
                              a: z, lda: ldz, b: w, ldb: c, c: dx, ldc: c)
                    let dh = dhidden.baseAddress!
                    for r in 0..<count { (dh + rows[first + r] * c).update(from: dx + r * c, count: c) }
                    progress()
                }
                if let dweight {
                    BLAS.gemm(transposeA: true, transposeB: false, m: v, n: c, k: count,
                              a: z, lda: ldz, b: x, ldb: c, beta: 1, c: dweight.baseAddress!, ldc: c)
                }
                first += count
            }
            return lossSum
        }
        return Result(lossSum: lossSum, count: rows.count)
    }

    /// Full logits `(rows, V)` for the given hidden rows: for generation and for checking against references.
    public static func logits(
        out: UnsafeMutableBufferPointer<Float>,
        hidden: UnsafeBufferPointer<Float>,
        weight: UnsafeBufferPointer<Float>,
        rows: Int, vocabulary v: Int, channels c: Int
    ) {
        precondition(out.count >= rows * v && hidden.count >= rows * c && weight.count == v * c, "Classifier.logits: buffers do not fit")
        guard rows > 0 else { return }
        if rows == 1 {   // generation: one matrix-vector product
            BLAS.gemv(m: v, n: c, a: weight.baseAddress!, lda: c, x: hidden.baseAddress!, y: out.baseAddress!)
            return
        }
        BLAS.gemm(transposeA: false, transposeB: true, m: rows, n: v, k: c,
                  a: hidden.baseAddress!, lda: c, b: weight.baseAddress!, ldb: c, c: out.baseAddress!, ldc: v)
    }
}
