/// One row-major matrix product `C (m × n) = op(A) (m × k) · op(B) (k × n)` as the trainer calls it,
/// with how many times one training step calls it.
///
/// ``training(tokens:hiddenSize:intermediateSize:queryWidth:keyValueWidth:vocabularySize:layers:queryHeads:headDimension:sequenceLength:supervisedRows:)``
/// lists the shapes of one step of a decoder model (forward `NT`, input gradient `NN`, weight gradient
/// `TN`), so BLAS libraries can be compared on exactly those (`zero-sft bench-gemm`, the BLAS tests).
public struct GemmShape: Sendable, Hashable, CustomStringConvertible {
    /// What the product is, e.g. `gate/up forward`.
    public var name: String
    public var transposeA: Bool
    public var transposeB: Bool
    public var m: Int
    public var n: Int
    public var k: Int
    /// Calls per training step (0 for shapes listed for reference only, such as fused projections).
    public var callsPerStep: Int

    public init(name: String, transposeA: Bool, transposeB: Bool, m: Int, n: Int, k: Int, callsPerStep: Int) {
        self.name = name
        self.transposeA = transposeA
        self.transposeB = transposeB
        self.m = m
        self.n = n
        self.k = k
        self.callsPerStep = callsPerStep
    }

    /// `NN`, `NT` or `TN`: whether A and B are read transposed.
    public var form: String { (transposeA ? "T" : "N") + (transposeB ? "T" : "N") }
    /// `2·m·n·k`.
    public var flops: Double { 2 * Double(m) * Double(n) * Double(k) }
    /// Row strides of A, B and C as stored (tightly packed, row-major).
    public var lda: Int { transposeA ? m : k }
    public var ldb: Int { transposeB ? k : n }
    public var ldc: Int { n }
    /// Elements of A, B and C as stored.
    public var aCount: Int { m * k }
    public var bCount: Int { k * n }
    public var cCount: Int { m * n }

    public var description: String { "\(name) \(form) \(m)×\(n)×\(k)" }

    /// The gemms of one training step of a decoder: each linear layer forward (`X Wᵀ`, NT), input
    /// gradient (`dY W`, NN) and weight gradient (`dYᵀ X`, TN); the fused q|k|v and gate|up projections
    /// (`callsPerStep` 0: listed for comparison); the classifier on ``Classifier/chunkRows``-row chunks;
    /// and attention on blocks of ``Attention/blockRows`` query rows against a full sequence of keys
    /// (`QKᵀ` and `dP = dO Vᵀ` NT, `PV` and `dQ` NN, `dV` and `dK` TN; causal blocks see fewer keys, so
    /// their counts are an upper bound).
    public static func training(
        tokens: Int, hiddenSize: Int, intermediateSize: Int, queryWidth: Int, keyValueWidth: Int,
        vocabularySize: Int, layers: Int, queryHeads: Int, headDimension: Int, sequenceLength: Int, supervisedRows: Int
    ) -> [GemmShape] {
        var shapes: [GemmShape] = []
        func linear(_ name: String, input: Int, output: Int, perLayer: Int) {
            let calls = perLayer * layers
            shapes.append(GemmShape(name: "\(name) forward", transposeA: false, transposeB: true, m: tokens, n: output, k: input, callsPerStep: calls))
            shapes.append(GemmShape(name: "\(name) dinput", transposeA: false, transposeB: false, m: tokens, n: input, k: output, callsPerStep: calls))
            shapes.append(GemmShape(name: "\(name) dweight", transposeA: true, transposeB: false, m: output, n: input, k: tokens, callsPerStep: calls))
        }
        let c = hiddenSize
        linear("q/o", input: c, output: queryWidth, perLayer: 2)
        linear("k/v", input: c, output: keyValueWidth, perLayer: 2)
        linear("gate/up", input: c, output: intermediateSize, perLayer: 2)
        linear("down", input: intermediateSize, output: c, perLayer: 1)
        linear("q|k|v fused", input: c, output: queryWidth + 2 * keyValueWidth, perLayer: 0)
        linear("gate|up fused", input: c, output: 2 * intermediateSize, perLayer: 0)
        let rows = Classifier.chunkRows, chunks = (supervisedRows + rows - 1) / rows
        shapes.append(GemmShape(name: "classifier forward", transposeA: false, transposeB: true, m: rows, n: vocabularySize, k: c, callsPerStep: chunks))
        shapes.append(GemmShape(name: "classifier dinput", transposeA: false, transposeB: false, m: rows, n: c, k: vocabularySize, callsPerStep: chunks))
        shapes.append(GemmShape(name: "classifier dweight", transposeA: true, transposeB: false, m: vocabularySize, n: c, k: rows, callsPerStep: chunks))
        let block = Attention.blockRows, keys = sequenceLength, d = headDimension
        let blocks = layers * queryHeads * (tokens / max(sequenceLength, 1)) * ((sequenceLength + block - 1) / block)
        shapes.append(GemmShape(name: "attention QKᵀ, dP", transposeA: false, transposeB: true, m: block, n: keys, k: d, callsPerStep: 3 * blocks))
        shapes.append(GemmShape(name: "attention PV, dQ", transposeA: false, transposeB: false, m: block, n: d, k: keys, callsPerStep: 2 * blocks))
        shapes.append(GemmShape(name: "attention dV, dK", transposeA: true, transposeB: false, m: keys, n: d, k: block, callsPerStep: 2 * blocks))
        return shapes
    }
}
