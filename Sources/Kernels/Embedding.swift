/// Token embedding lookup: `out[t] = W[token[t]]`.
///
/// Shapes: `tokens (N)`, `weight (V, C)`, `out (N, C)`. Backward scatters rows back into `dweight`.
public enum Embedding {
    public static func forward(
        out: UnsafeMutableBufferPointer<Float>,
        tokens: UnsafeBufferPointer<Int32>,
        weight: UnsafeBufferPointer<Float>,
        vocabulary v: Int, channels c: Int
    ) {
        let n = tokens.count
        precondition(out.count >= n * c && weight.count == v * c, "Embedding.forward: buffers do not fit (N \(n), V \(v), C \(c))")
        guard n > 0 else { return }
        let y = out.baseAddress!, w = weight.baseAddress!
        for t in 0..<n {
            let id = Int(tokens[t])
            precondition(id >= 0 && id < v, "Embedding.forward: token id \(id) at position \(t) outside the vocabulary of \(v)")
            (y + t * c).update(from: w + id * c, count: c)
        }
    }

    /// Accumulates `dweight[token[t]] += dout[t]`.
    public static func backward(
        dweight: UnsafeMutableBufferPointer<Float>,
        dout: UnsafeBufferPointer<Float>,
        tokens: UnsafeBufferPointer<Int32>,
        vocabulary v: Int, channels c: Int
    ) {
        let n = tokens.count
        precondition(dout.count >= n * c && dweight.count == v * c, "Embedding.backward: buffers do not fit")
        guard n > 0 else { return }
        let dw = dweight.baseAddress!, dy = dout.baseAddress!
        for t in 0..<n {
            let row = dw + Int(tokens[t]) * c, src = dy + t * c
            for j in 0..<c { row[j] += src[j] }
        }
    }
}
