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

    /// Computes the loss and, when `dhidden` and `dweight` are given, its gradients.
    ///
    /// `dhidden` is overwritten at supervised rows and zeroed elsewhere; `dweight` accumulates.
    @discardableResult
    public static func forwardBackward(
        hidden: UnsafeBufferPointer<Float>,
        weight: UnsafeBufferPointer<Float>,
        targets: UnsafeBufferPointer<Int32>,
        vocabulary v: Int, channels c: Int,
        scale: Float,
        dhidden: UnsafeMutableBufferPointer<Float>?,
        dweight: UnsafeMutableBufferPointer<Float>?
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
        let gathered = UnsafeMutableBufferPointer<Float>.allocate(capacity: chunk * c)
        let logits = UnsafeMutableBufferPointer<Float>.allocate(capacity: chunk * v)
        let dgathered = UnsafeMutableBufferPointer<Float>.allocate(capacity: chunk * c)
        defer { gathered.deallocate(); logits.deallocate(); dgathered.deallocate() }
        let h = hidden.baseAddress!, w = weight.baseAddress!, x = gathered.baseAddress!
        let z = logits.baseAddress!, dx = dgathered.baseAddress!
        var lossSum: Double = 0
        var first = 0
        while first < rows.count {
            let count = min(chunk, rows.count - first)
            for r in 0..<count { (x + r * c).update(from: h + rows[first + r] * c, count: c) }
            BLAS.gemm(transposeA: false, transposeB: true, m: count, n: v, k: c,
                      a: x, lda: c, b: w, ldb: c, c: z, ldc: v)
            for r in 0..<count {
                let row = z + r * v
                let target = Int(targets[rows[first + r]])
                let targetLogit = row[target]
                let maximum = VectorMath.maximum(row, count: v)
                let sum = VectorMath.exponentiate(row, count: v, shift: maximum)
                lossSum += Double(maximum + logf(sum) - targetLogit)
                if dhidden != nil || dweight != nil {
                    VectorMath.scale(row, count: v, by: scale / sum)
                    row[target] -= scale
                }
            }
            if let dhidden {
                BLAS.gemm(transposeA: false, transposeB: false, m: count, n: c, k: v,
                          a: z, lda: v, b: w, ldb: c, c: dx, ldc: c)
                let dh = dhidden.baseAddress!
                for r in 0..<count { (dh + rows[first + r] * c).update(from: dx + r * c, count: c) }
            }
            if let dweight {
                BLAS.gemm(transposeA: true, transposeB: false, m: v, n: c, k: count,
                          a: z, lda: v, b: x, ldb: c, beta: 1, c: dweight.baseAddress!, ldc: c)
            }
            first += count
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
