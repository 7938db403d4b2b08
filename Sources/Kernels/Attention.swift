import Glibc

/// Causal grouped-query self-attention over packed segments.
///
/// Tokens of several examples are packed one after another; `boundaries` lists where each segment
/// starts (`boundaries[0] == 0`, last element `N`). A token attends only to earlier tokens of its own
/// segment, so packed examples never see each other, and no work is spent on other segments' blocks:
/// each segment is processed alone, in blocks of ``blockRows`` query rows that touch only the keys at
/// or before the block's last row.
///
/// With a sliding window `W` (Mistral's `sliding_window`, transformers' `sliding_window_overlay`), the
/// token at index `p` of its segment sees only keys `j` with `p − W < j ≤ p` (itself and the `W − 1`
/// before it), and each block's products touch only the keys some row of the block sees.
///
/// Shapes: `q (N, Hq, d)`, `k, v (N, Hkv, d)`, `out (N, Hq, d)`, `lse (N, Hq)`; query head `h` reads
/// key/value head `h / (Hq / Hkv)`. Forward caches `lse` (the log-sum-exp of each softmax row), so the
/// backward recomputes the probabilities instead of storing `(T, T)` per head.
///
/// Math, with `s = 1/√d`, `S = s·QKᵀ` (causal), `P = softmax(S)`, `O = PV`:
/// `dV = Pᵀ dO`, `dP = dO Vᵀ`, `dS = P ⊙ (dP − rowsum(dO ⊙ O))`, `dQ = s·dS K`, `dK = s·dSᵀ Q`.
public enum Attention {
    /// Query rows per block.
    public static let blockRows = 64

    public struct Shape: Sendable {
        public var queryHeads: Int
        public var keyValueHeads: Int
        public var headDimension: Int
        /// Keys each query sees, itself included (nil: every earlier key of its segment).
        public var window: Int?
        public init(queryHeads: Int, keyValueHeads: Int, headDimension: Int, window: Int? = nil) {
            precondition(queryHeads % keyValueHeads == 0, "Attention: \(queryHeads) query heads are not a multiple of \(keyValueHeads) key/value heads")
            precondition(window.map { $0 >= 1 } ?? true, "Attention: window \(window ?? 0) must be at least 1")
            self.queryHeads = queryHeads
            self.keyValueHeads = keyValueHeads
            self.headDimension = headDimension
            self.window = window
        }
        /// The first key index (within the segment) that the query at index `p` sees.
        @inline(__always) func firstKey(_ p: Int) -> Int { window.map { max(0, p - $0 + 1) } ?? 0 }
        var queryWidth: Int { queryHeads * headDimension }
        var keyValueWidth: Int { keyValueHeads * headDimension }
        var scale: Float { 1 / Float(headDimension).squareRoot() }
    }

    /// The work of one call: a (segment, key/value head) pair, the unit a thread takes.
    ///
    /// Each task owns its segment's rows of `out`, `lse`, `dq` for the group's query heads and of `dk`,
    /// `dv` for its key/value head, so tasks never write the same element, and each task's arithmetic
    /// is the same whichever thread runs it and however many there are: results do not depend on the
    /// thread count (bitwise). Costliest first (∝ rows × keys seen), so the threads balance.
    static func tasks(boundaries: [Int], shape: Shape) -> [(start: Int, end: Int, head: Int)] {
        var tasks: [(start: Int, end: Int, head: Int, cost: Int)] = []
        for (start, end) in zip(boundaries, boundaries.dropFirst()) where end > start {
            let length = end - start, cost = length * min(length, shape.window ?? length)
            for g in 0..<shape.keyValueHeads { tasks.append((start, end, g, cost)) }
        }
        // Stable: equal costs keep segment order.
        let order = tasks.indices.sorted { (tasks[$0].cost, -$0) > (tasks[$1].cost, -$1) }
        return order.map { (tasks[$0].start, tasks[$0].end, tasks[$0].head) }
    }

    /// One backward row, in place, eight lanes at a time: `p[j] = exp(p[j] − logSumExp)` (the
    /// probabilities from the scores and the forward's cached `lse`), then `dp[j] = p[j] · (dp[j] − rowDot)`
    /// (`dS`). One pass instead of an `exponentiate` (whose sum the backward does not need) and a second
    /// loop; each lane's operations are the scalar tail's, so a row's bits do not depend on its offset.
    @inline(__always)
    static func probabilitiesAndScoreGradients(p: UnsafeMutablePointer<Float>, dp: UnsafeMutablePointer<Float>, count: Int,
                                               logSumExp: Float, rowDot: Float) {
        let shift = SIMD8<Float>(repeating: logSumExp), dot = SIMD8<Float>(repeating: rowDot)
        var j = 0
        while j + 8 <= count {
            let e = VectorMath.exp(VectorMath.load8(p + j) - shift)
            VectorMath.store8(e, p + j)
            VectorMath.store8(e * (VectorMath.load8(dp + j) - dot), dp + j)
            j += 8
        }
        while j < count {
            let e = VectorMath.exp(p[j] - logSumExp)
            p[j] = e
            dp[j] = e * (dp[j] - rowDot)
            j += 1
        }
    }

    /// Floats of scratch one call allocates (the backward's, the larger) when its longest segment has
    /// `longest` tokens and `threads` worker threads run it: per worker, stacked queries, `dO` and `dQ`
    /// (`min(blockRows, longest) · group × d` each) and `P`, `dP` (`… × longest` each).
    public static func scratchFloats(shape: Shape, longest: Int, threads: Int) -> Int {
        let stacked = min(blockRows, longest) * (shape.queryHeads / shape.keyValueHeads)
        return max(1, threads) * (3 * stacked * shape.headDimension + 2 * stacked * longest)
    }

    /// Computes `out` and `lse`.
    ///
    /// Work is split into (segment, key/value head) tasks over the rank's threads
    /// (``Parallel/forEachTask(count:workers:_:)``), each issuing single-threaded gemms. Within a task the
    /// query rows of all `Hq / Hkv` heads sharing the key/value head are stacked (`rows × group` by `d`,
    /// row `i·group + j` for token `i`, head `j` of the group: one contiguous copy per token), so each
    /// block's two products are one gemm each against the shared key and value rows.
    public static func forward(
        out: UnsafeMutableBufferPointer<Float>,
        lse: UnsafeMutableBufferPointer<Float>,
        q: UnsafeBufferPointer<Float>, k: UnsafeBufferPointer<Float>, v: UnsafeBufferPointer<Float>,
        boundaries: [Int], shape: Shape
    ) {
        let n = boundaries.last ?? 0
        let hq = shape.queryHeads, d = shape.headDimension, qw = shape.queryWidth, kw = shape.keyValueWidth
        precondition(q.count >= n * qw && out.count >= n * qw && k.count >= n * kw && v.count >= n * kw && lse.count >= n * hq,
                     "Attention.forward: buffers do not fit (N \(n))")
        guard n > 0 else { return }
        let group = hq / shape.keyValueHeads, scale = shape.scale, groupWidth = group * d
        let longest = zip(boundaries.dropFirst(), boundaries).map { $0 - $1 }.max() ?? 0
        let stacked = min(blockRows, longest) * group
        let tasks = Self.tasks(boundaries: boundaries, shape: shape)
        let qb = q.baseAddress!, kb = k.baseAddress!, vb = v.baseAddress!
        let ob = out.baseAddress!, lb = lse.baseAddress!
        Parallel.withSingleThreadedBLAS { threads in
            let workers = min(threads, tasks.count)
            // Per worker: stacked queries and outputs (stacked × d), scores (stacked × longest).
            let perWorker = 2 * stacked * d + stacked * longest
            let scratch = UnsafeMutableBufferPointer<Float>.allocate(capacity: workers * perWorker)
            defer { scratch.deallocate() }
            Parallel.forEachTask(count: tasks.count, workers: workers) { task, worker in
                BLAS.useOneThreadOnCallingThread()  // oneDNN: per-thread count (restored on the caller)
                let (start, end, g) = tasks[task]
                let length = end - start
                let qs = scratch.baseAddress! + worker * perWorker, os = qs + stacked * d, s = os + stacked * d
                let kSeg = kb + start * kw + g * d, vSeg = vb + start * kw + g * d
                var r0 = 0
                while r0 < length {
                    // Keys lo ..< r1 are the ones some row of the block sees; row p sees firstKey(p) ... p.
                    let r1 = min(r0 + blockRows, length), rows = r1 - r0, m = rows * group
                    let lo = shape.firstKey(r0), width = r1 - lo
                    for i in 0..<rows { (qs + i * groupWidth).update(from: qb + (start + r0 + i) * qw + g * groupWidth, count: groupWidth) }
                    BLAS.gemm(transposeA: false, transposeB: true, m: m, n: width, k: d, alpha: scale,
                              a: qs, lda: d, b: kSeg + lo * kw, ldb: kw, c: s, ldc: width)
                    for r in 0..<m {
                        let i = r / group, p = r0 + i, row = s + r * width
                        let first = shape.firstKey(p) - lo, count = p - lo + 1 - first
                        for j in 0..<first { row[j] = 0 }
                        let maximum = VectorMath.maximum(row + first, count: count)
                        let sum = VectorMath.exponentiate(row + first, count: count, shift: maximum)
                        VectorMath.scale(row + first, count: count, by: 1 / sum)
                        for j in (p - lo + 1)..<width { row[j] = 0 }
                        lb[(start + p) * hq + g * group + r % group] = maximum + logf(sum)
                    }
                    BLAS.gemm(transposeA: false, transposeB: false, m: m, n: d, k: width,
                              a: s, lda: width, b: vSeg + lo * kw, ldb: kw, c: os, ldc: d)
                    for i in 0..<rows { (ob + (start + r0 + i) * qw + g * groupWidth).update(from: os + i * groupWidth, count: groupWidth) }
                    r0 = r1
                }
            }
        }
    }

    /// Accumulates `dq += ∂L/∂q`, `dk += ∂L/∂k`, `dv += ∂L/∂v` from `dout`, recomputing the
    /// probabilities from `q`, `k` and the cached `lse`.
    ///
    /// Split and stacked as the forward: a (segment, key/value head) task accumulates `dk` and `dv` of
    /// its head over all of its query blocks and group heads, so no two threads add into the same rows.
    public static func backward(
        dq: UnsafeMutableBufferPointer<Float>, dk: UnsafeMutableBufferPointer<Float>, dv: UnsafeMutableBufferPointer<Float>,
        dout: UnsafeBufferPointer<Float>,
        q: UnsafeBufferPointer<Float>, k: UnsafeBufferPointer<Float>, v: UnsafeBufferPointer<Float>,
        out: UnsafeBufferPointer<Float>, lse: UnsafeBufferPointer<Float>,
        boundaries: [Int], shape: Shape
    ) {
        let n = boundaries.last ?? 0
        let hq = shape.queryHeads, d = shape.headDimension, qw = shape.queryWidth, kw = shape.keyValueWidth
        precondition(q.count >= n * qw && out.count >= n * qw && dout.count >= n * qw && dq.count >= n * qw
                     && k.count >= n * kw && v.count >= n * kw && dk.count >= n * kw && dv.count >= n * kw && lse.count >= n * hq,
                     "Attention.backward: buffers do not fit (N \(n))")
        guard n > 0 else { return }
        let group = hq / shape.keyValueHeads, scale = shape.scale, groupWidth = group * d
        let longest = zip(boundaries.dropFirst(), boundaries).map { $0 - $1 }.max() ?? 0
        let stacked = min(blockRows, longest) * group
        let tasks = Self.tasks(boundaries: boundaries, shape: shape)
        let qb = q.baseAddress!, kb = k.baseAddress!, vb = v.baseAddress!, ob = out.baseAddress!, lb = lse.baseAddress!
        let dqb = dq.baseAddress!, dkb = dk.baseAddress!, dvb = dv.baseAddress!, dob = dout.baseAddress!
        Parallel.withSingleThreadedBLAS { threads in
            let workers = min(threads, tasks.count)
            // Per worker: stacked q, dO and dQ (stacked × d each), P and dP (stacked × longest each).
            let perWorker = 3 * stacked * d + 2 * stacked * longest
            let scratch = UnsafeMutableBufferPointer<Float>.allocate(capacity: workers * perWorker)
            // (what ``scratchFloats(shape:longest:threads:)`` plans)
            defer { scratch.deallocate() }
            Parallel.forEachTask(count: tasks.count, workers: workers) { task, worker in
                BLAS.useOneThreadOnCallingThread()  // oneDNN: per-thread count (restored on the caller)
                let (start, end, g) = tasks[task]
                let length = end - start
                let qs = scratch.baseAddress! + worker * perWorker, dos = qs + stacked * d, dqs = dos + stacked * d
                let p = dqs + stacked * d, dp = p + stacked * longest
                let kSeg = kb + start * kw + g * d, vSeg = vb + start * kw + g * d
                let dkSeg = dkb + start * kw + g * d, dvSeg = dvb + start * kw + g * d
                var r0 = 0
                while r0 < length {
                    let r1 = min(r0 + blockRows, length), rows = r1 - r0, m = rows * group
                    let lo = shape.firstKey(r0), width = r1 - lo
                    for i in 0..<rows {
                        let offset = (start + r0 + i) * qw + g * groupWidth
                        (qs + i * groupWidth).update(from: qb + offset, count: groupWidth)
                        (dos + i * groupWidth).update(from: dob + offset, count: groupWidth)
                    }
                    // P = exp(S − lse), causal (and windowed), over keys lo ..< r1.
                    BLAS.gemm(transposeA: false, transposeB: true, m: m, n: width, k: d, alpha: scale,
                              a: qs, lda: d, b: kSeg + lo * kw, ldb: kw, c: p, ldc: width)
                    // dP = dO Vᵀ.
                    BLAS.gemm(transposeA: false, transposeB: true, m: m, n: width, k: d,
                              a: dos, lda: d, b: vSeg + lo * kw, ldb: kw, c: dp, ldc: width)
                    for r in 0..<m {
                        let i = r / group, h = g * group + r % group
                        let pos = r0 + i, prow = p + r * width, dprow = dp + r * width
                        let first = shape.firstKey(pos) - lo, last = pos - lo
                        let maximum = lb[(start + pos) * hq + h]
                        let rowDot = VectorMath.dot(ob + (start + pos) * qw + h * d, dos + r * d, count: d)
                        for j in 0..<first {
                            prow[j] = 0
                            dprow[j] = 0
                        }
                        Self.probabilitiesAndScoreGradients(p: prow + first, dp: dprow + first, count: last - first + 1,
                                                            logSumExp: maximum, rowDot: rowDot)
                        for j in (last + 1)..<width {
                            prow[j] = 0
                            dprow[j] = 0
                        }
                    }
                    // dV += Pᵀ dO.
                    BLAS.gemm(transposeA: true, transposeB: false, m: width, n: d, k: m,
                              a: p, lda: width, b: dos, ldb: d, beta: 1, c: dvSeg + lo * kw, ldc: kw)
                    // dQ += s · dS K (stacked, then added to each token's group heads).
                    BLAS.gemm(transposeA: false, transposeB: false, m: m, n: d, k: width, alpha: scale,
                              a: dp, lda: width, b: kSeg + lo * kw, ldb: kw, c: dqs, ldc: d)
                    for i in 0..<rows {
                        let target = dqb + (start + r0 + i) * qw + g * groupWidth, source = dqs + i * groupWidth
                        for c in 0..<groupWidth { target[c] += source[c] }
                    }
                    // dK += s · dSᵀ Q.
                    BLAS.gemm(transposeA: true, transposeB: false, m: width, n: d, k: m, alpha: scale,
                              a: dp, lda: width, b: qs, ldb: d, beta: 1, c: dkSeg + lo * kw, ldc: kw)
                    r0 = r1
                }
            }
        }
    }
}
