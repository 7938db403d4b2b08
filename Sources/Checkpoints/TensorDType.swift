/// The element type of a stored tensor: a plain number type or one of ggml's block-quantised formats.
///
/// Every type here can be converted to `Float` by `TensorSource.read`. Block-quantised types store
/// `elementsPerBlock` consecutive elements (along the innermost dimension) in `bytesPerBlock` bytes;
/// plain types are blocks of one element. See `docs/formats.md` for each layout and its dequantisation.
public enum TensorDType: String, Sendable, CaseIterable {
    case f32, f16, bf16, f64
    case i8, i16, i32, i64, u8, bool
    case q4_0, q4_1, q5_0, q5_1, q8_0
    case q2_k, q3_k, q4_k, q5_k, q6_k, q8_k

    /// Elements stored together in one block (1 for plain types, 32 or 256 for quantised types).
    public var elementsPerBlock: Int {
        switch self {
        case .f32, .f16, .bf16, .f64, .i8, .i16, .i32, .i64, .u8, .bool: 1
        case .q4_0, .q4_1, .q5_0, .q5_1, .q8_0: 32
        case .q2_k, .q3_k, .q4_k, .q5_k, .q6_k, .q8_k: 256
        }
    }

    /// Bytes of one block (the element size for plain types).
    public var bytesPerBlock: Int {
        switch self {
        case .f32: 4
        case .f16, .bf16: 2
        case .f64: 8
        case .i8, .u8, .bool: 1
        case .i16: 2
        case .i32: 4
        case .i64: 8
        case .q4_0: Q4_0.bytesPerBlock
        case .q4_1: Q4_1.bytesPerBlock
        case .q5_0: Q5_0.bytesPerBlock
        case .q5_1: Q5_1.bytesPerBlock
        case .q8_0: Q8_0.bytesPerBlock
        case .q2_k: Q2_K.bytesPerBlock
        case .q3_k: Q3_K.bytesPerBlock
        case .q4_k: Q4_K.bytesPerBlock
        case .q5_k: Q5_K.bytesPerBlock
        case .q6_k: Q6_K.bytesPerBlock
        case .q8_k: Q8_K.bytesPerBlock
        }
    }

    /// Whether elements are stored in multi-element blocks (ggml quantisation).
    public var isBlockQuantized: Bool { elementsPerBlock > 1 }

    /// Bytes needed for `elementCount` elements, or nil if the count is not a whole number of blocks
    /// or the size overflows `Int`.
    public func byteCount(elementCount: Int) -> Int? {
        guard elementCount >= 0, elementCount % elementsPerBlock == 0 else { return nil }
        let (bytes, overflow) = (elementCount / elementsPerBlock).multipliedReportingOverflow(by: bytesPerBlock)
        return overflow ? nil : bytes
    }

    /// The dtype string used in safetensors headers (`"F32"`, `"BF16"`, …), or nil for ggml-only types.
    public var safetensorsName: String? {
        switch self {
        case .f32: "F32"
        case .f16: "F16"
        case .bf16: "BF16"
        case .f64: "F64"
        case .i8: "I8"
        case .i16: "I16"
        case .i32: "I32"
        case .i64: "I64"
        case .u8: "U8"
        case .bool: "BOOL"
        default: nil
        }
    }

    /// Parses a safetensors dtype string; nil for types this module does not read (e.g. `F8_E4M3`, `U32`).
    public init?(safetensorsName: String) {
        guard let match = TensorDType.allCases.first(where: { $0.safetensorsName == safetensorsName }) else { return nil }
        self = match
    }

    /// ggml's `enum ggml_type` value for this type, or nil if GGUF has no such type (`u8`, `bool`).
    public var ggmlType: UInt32? {
        switch self {
        case .f32: 0
        case .f16: 1
        case .q4_0: 2
        case .q4_1: 3
        case .q5_0: 6
        case .q5_1: 7
        case .q8_0: 8
        case .q2_k: 10
        case .q3_k: 11
        case .q4_k: 12
        case .q5_k: 13
        case .q6_k: 14
        case .q8_k: 15
        case .i8: 24
        case .i16: 25
        case .i32: 26
        case .i64: 27
        case .f64: 28
        case .bf16: 30
        case .u8, .bool: nil
        }
    }

    /// Maps ggml's `enum ggml_type` value to a dtype; nil for types this module cannot dequantise.
    public init?(ggmlType: UInt32) {
        guard let match = TensorDType.allCases.first(where: { $0.ggmlType == ggmlType }) else { return nil }
        self = match
    }

    /// ggml's name for a type id, for error messages (`"IQ2_XXS"`, …); `"unknown"` if the id is not in ggml.
    static func ggmlTypeName(_ id: UInt32) -> String {
        let names: [UInt32: String] = [
            0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 6: "Q5_0", 7: "Q5_1", 8: "Q8_0", 9: "Q8_1",
            10: "Q2_K", 11: "Q3_K", 12: "Q4_K", 13: "Q5_K", 14: "Q6_K", 15: "Q8_K", 16: "IQ2_XXS",
            17: "IQ2_XS", 18: "IQ3_XXS", 19: "IQ1_S", 20: "IQ4_NL", 21: "IQ3_S", 22: "IQ2_S", 23: "IQ4_XS",
            24: "I8", 25: "I16", 26: "I32", 27: "I64", 28: "F64", 29: "IQ1_M", 30: "BF16",
            34: "TQ1_0", 35: "TQ2_0", 39: "MXFP4",
        ]
        return names[id] ?? "unknown"
    }
}
