// Conversion of stored elements to Float: plain types and ggml's block-quantised formats.
//
// Each block format mirrors ggml's reference `dequantize_row_*` in ggml-quants.c, operation for
// operation and in the same order (`(d * scale) * q - (dmin * min)`), so results are bit-identical to
// ggml and to the `gguf` Python package. Block layouts and formulas are in docs/formats.md.
// All loads are unaligned-safe: GGUF aligns tensors, not the fields inside odd-sized blocks, and
// safetensors does not align tensors at all.

/// Converts IEEE binary16 bits to Float exactly (subnormals, infinities and NaN payloads included).
@inline(__always)
func floatFromHalfBits(_ bits: UInt16) -> Float {
    let sign = UInt32(bits & 0x8000) << 16
    let exponent = UInt32(bits >> 10) & 0x1F
    let mantissa = UInt32(bits & 0x03FF)
    if exponent == 0x1F { return Float(bitPattern: sign | 0x7F80_0000 | (mantissa << 13)) }
    if exponent == 0 {
        // Zero or subnormal: mantissa × 2⁻²⁴, exact in Float.
        let magnitude = Float(mantissa) * 0x1p-24
        return Float(bitPattern: sign | magnitude.bitPattern)
    }
    return Float(bitPattern: sign | ((exponent + 112) << 23) | (mantissa << 13))
}

/// Converts bfloat16 bits to Float exactly (bfloat16 is the top half of a binary32).
@inline(__always)
func floatFromBFloat16Bits(_ bits: UInt16) -> Float {
    Float(bitPattern: UInt32(bits) << 16)
}

/// Converts Float to bfloat16 bits, rounding to nearest even; NaN stays a (quiet) NaN.
/// Matches PyTorch's `.to(torch.bfloat16)` and ggml's `ggml_compute_fp32_to_bf16`.
@inline(__always)
func bfloat16Bits(from value: Float) -> UInt16 {
    let bits = value.bitPattern
    if (bits & 0x7FFF_FFFF) > 0x7F80_0000 { return UInt16(truncatingIfNeeded: bits >> 16) | 0x0040 }
    let rounded = bits &+ 0x7FFF &+ ((bits >> 16) & 1)
    return UInt16(truncatingIfNeeded: rounded >> 16)
}

/// Converts Float to IEEE binary16 bits, rounding to nearest even (overflow gives ±infinity).
@inline(__always)
func halfBits(from value: Float) -> UInt16 {
    Float16(value).bitPattern
}

extension UnsafeRawPointer {
    @inline(__always) func half(at offset: Int) -> Float {
        floatFromHalfBits(loadUnaligned(fromByteOffset: offset, as: UInt16.self))
    }
    @inline(__always) func bytes(at offset: Int) -> UnsafePointer<UInt8> {
        (self + offset).assumingMemoryBound(to: UInt8.self)
    }
}

/// One of ggml's block formats: `elementsPerBlock` floats stored in `bytesPerBlock` bytes.
protocol BlockFormat {
    static var elementsPerBlock: Int { get }
    static var bytesPerBlock: Int { get }
    /// Decodes the block at `block` into `output[0..<elementsPerBlock]`.
    static func decode(_ block: UnsafeRawPointer, into output: UnsafeMutablePointer<Float>)
}

/// Q4_0: `{ f16 d; u8 qs[16] }`; element j (j < 16) is the low nibble of qs[j], element j+16 its high
/// nibble; value = (q − 8) · d.
enum Q4_0: BlockFormat {
    static let elementsPerBlock = 32
    static let bytesPerBlock = 18
    @inline(__always) static func decode(_ block: UnsafeRawPointer, into y: UnsafeMutablePointer<Float>) {
        let d = block.half(at: 0)
        let qs = block.bytes(at: 2)
        for j in 0..<16 {
            y[j] = Float(Int32(qs[j] & 0x0F) - 8) * d
            y[j + 16] = Float(Int32(qs[j] >> 4) - 8) * d
        }
    }
}

/// Q4_1: `{ f16 d; f16 m; u8 qs[16] }`; nibbles as in Q4_0; value = q · d + m.
enum Q4_1: BlockFormat {
    static let elementsPerBlock = 32
    static let bytesPerBlock = 20
    @inline(__always) static func decode(_ block: UnsafeRawPointer, into y: UnsafeMutablePointer<Float>) {
        let d = block.half(at: 0)
        let m = block.half(at: 2)
        let qs = block.bytes(at: 4)
        for j in 0..<16 {
            y[j] = Float(qs[j] & 0x0F) * d + m
            y[j + 16] = Float(qs[j] >> 4) * d + m
        }
    }
}

/// Q5_0: `{ f16 d; u32 qh; u8 qs[16] }`; the 5th bit of element j is bit j of qh;
/// value = (q − 16) · d.
enum Q5_0: BlockFormat {
    static let elementsPerBlock = 32
    static let bytesPerBlock = 22
    @inline(__always) static func decode(_ block: UnsafeRawPointer, into y: UnsafeMutablePointer<Float>) {
        let d = block.half(at: 0)
        let qh = block.loadUnaligned(fromByteOffset: 2, as: UInt32.self)
        let qs = block.bytes(at: 6)
        for j in 0..<16 {
            let high0 = ((qh >> UInt32(j)) << 4) & 0x10
            let high1 = (qh >> UInt32(j + 12)) & 0x10
            y[j] = Float(Int32(UInt32(qs[j] & 0x0F) | high0) - 16) * d
            y[j + 16] = Float(Int32(UInt32(qs[j] >> 4) | high1) - 16) * d
        }
    }
}

/// Q5_1: `{ f16 d; f16 m; u32 qh; u8 qs[16] }`; bits as in Q5_0; value = q · d + m.
enum Q5_1: BlockFormat {
    static let elementsPerBlock = 32
    static let bytesPerBlock = 24
    @inline(__always) static func decode(_ block: UnsafeRawPointer, into y: UnsafeMutablePointer<Float>) {
        let d = block.half(at: 0)
        let m = block.half(at: 2)
        let qh = block.loadUnaligned(fromByteOffset: 4, as: UInt32.self)
        let qs = block.bytes(at: 8)
        for j in 0..<16 {
            let high0 = ((qh >> UInt32(j)) << 4) & 0x10
            let high1 = (qh >> UInt32(j + 12)) & 0x10
            y[j] = Float(UInt32(qs[j] & 0x0F) | high0) * d + m
            y[j + 16] = Float(UInt32(qs[j] >> 4) | high1) * d + m
        }
    }
}

/// Q8_0: `{ f16 d; i8 qs[32] }`; value = q · d.
enum Q8_0: BlockFormat {
    static let elementsPerBlock = 32
    static let bytesPerBlock = 34
    @inline(__always) static func decode(_ block: UnsafeRawPointer, into y: UnsafeMutablePointer<Float>) {
        let d = block.half(at: 0)
        let qs = block.bytes(at: 2)
        for j in 0..<32 {
            y[j] = Float(Int8(bitPattern: qs[j])) * d
        }
    }
}

/// Q2_K: `{ u8 scales[16]; u8 qs[64]; f16 d; f16 dmin }`, 16 sub-blocks of 16 with a 4-bit scale
/// (low nibble) and 4-bit min (high nibble); value = (d · scale) · q − dmin · min, q 2 bits.
enum Q2_K: BlockFormat {
    static let elementsPerBlock = 256
    static let bytesPerBlock = 84
    @inline(__always) static func decode(_ block: UnsafeRawPointer, into output: UnsafeMutablePointer<Float>) {
        let scales = block.bytes(at: 0)
        let d = block.half(at: 80)
        let dmin = block.half(at: 82)
        var y = output
        var q = block.bytes(at: 16)
        var scaleIndex = 0
        for _ in 0..<2 {
            var shift: UInt8 = 0
            for _ in 0..<4 {
                for half in 0..<2 {
                    let scale = scales[scaleIndex]
                    scaleIndex += 1
                    let dl = d * Float(scale & 0x0F)
                    let ml = dmin * Float(scale >> 4)
                    let qs = q + 16 * half
                    for l in 0..<16 { y[l] = dl * Float((qs[l] >> shift) & 3) - ml }
                    y += 16
                }
                shift += 2
            }
            q += 32
        }
    }
}

/// Q3_K: `{ u8 hmask[32]; u8 qs[64]; u8 scales[12]; f16 d }`, 16 sub-blocks of 16 with 6-bit signed
/// scales (stored +32); value = (d · (scale − 32)) · (q₂ − (hbit ? 0 : 4)).
enum Q3_K: BlockFormat {
    static let elementsPerBlock = 256
    static let bytesPerBlock = 110
    @inline(__always) static func decode(_ block: UnsafeRawPointer, into output: UnsafeMutablePointer<Float>) {
        let hmask = block.bytes(at: 0)
        let packed = block.bytes(at: 96)
        let d = block.half(at: 108)
        // Scale i: low 4 bits from packed[i % 8] (low nibble for i < 8, high for i ≥ 8),
        // high 2 bits from packed[8 + i % 4] >> (2 · (i / 4)).
        withUnsafeTemporaryAllocation(of: Float.self, capacity: 16) { dl in
            for i in 0..<16 {
                let low = i < 8 ? packed[i] & 0x0F : packed[i - 8] >> 4
                let high = (packed[8 + i % 4] >> UInt8(2 * (i / 4))) & 3
                dl[i] = d * Float(Int32(low | (high << 4)) - 32)
            }
            var y = output
            var q = block.bytes(at: 32)
            var mask: UInt8 = 1
            var scaleIndex = 0
            for _ in 0..<2 {
                var shift: UInt8 = 0
                for _ in 0..<4 {
                    for half in 0..<2 {
                        let scale = dl[scaleIndex]
                        scaleIndex += 1
                        let qs = q + 16 * half
                        let hm = hmask + 16 * half
                        for l in 0..<16 {
                            let value = Int32((qs[l] >> shift) & 3) - ((hm[l] & mask) != 0 ? 0 : 4)
                            y[l] = scale * Float(value)
                        }
                        y += 16
                    }
                    shift += 2
                    mask <<= 1
                }
                q += 32
            }
        }
    }
}

/// The 6-bit scale and min of sub-block `j` (0..<8) of a Q4_K/Q5_K block; ggml's `get_scale_min_k4`.
@inline(__always)
private func scaleMinK4(_ j: Int, _ q: UnsafePointer<UInt8>) -> (scale: UInt8, min: UInt8) {
    if j < 4 { return (q[j] & 63, q[j + 4] & 63) }
    return ((q[j + 4] & 0x0F) | ((q[j - 4] >> 6) << 4), (q[j + 4] >> 4) | ((q[j] >> 6) << 4))
}

/// Q4_K: `{ f16 d; f16 dmin; u8 scales[12]; u8 qs[128] }`, 8 sub-blocks of 32 with 6-bit scale and
/// min; value = (d · scale) · q − (dmin · min), q 4 bits.
enum Q4_K: BlockFormat {
    static let elementsPerBlock = 256
    static let bytesPerBlock = 144
    @inline(__always) static func decode(_ block: UnsafeRawPointer, into output: UnsafeMutablePointer<Float>) {
        let d = block.half(at: 0)
        let dmin = block.half(at: 2)
        let scales = block.bytes(at: 4)
        var q = block.bytes(at: 16)
        var y = output
        for j in 0..<4 {
            let (scale1, min1) = scaleMinK4(2 * j, scales)
            let (scale2, min2) = scaleMinK4(2 * j + 1, scales)
            let d1 = d * Float(scale1), m1 = dmin * Float(min1)
            let d2 = d * Float(scale2), m2 = dmin * Float(min2)
            for l in 0..<32 { y[l] = d1 * Float(q[l] & 0x0F) - m1 }
            for l in 0..<32 { y[32 + l] = d2 * Float(q[l] >> 4) - m2 }
            q += 32
            y += 64
        }
    }
}

/// Q5_K: `{ f16 d; f16 dmin; u8 scales[12]; u8 qh[32]; u8 qs[128] }`; as Q4_K with a 5th bit from qh;
/// value = (d · scale) · q − (dmin · min).
enum Q5_K: BlockFormat {
    static let elementsPerBlock = 256
    static let bytesPerBlock = 176
    @inline(__always) static func decode(_ block: UnsafeRawPointer, into output: UnsafeMutablePointer<Float>) {
        let d = block.half(at: 0)
        let dmin = block.half(at: 2)
        let scales = block.bytes(at: 4)
        let qh = block.bytes(at: 16)
        var ql = block.bytes(at: 48)
        var y = output
        var mask1: UInt8 = 1, mask2: UInt8 = 2
        for j in 0..<4 {
            let (scale1, min1) = scaleMinK4(2 * j, scales)
            let (scale2, min2) = scaleMinK4(2 * j + 1, scales)
            let d1 = d * Float(scale1), m1 = dmin * Float(min1)
            let d2 = d * Float(scale2), m2 = dmin * Float(min2)
            for l in 0..<32 { y[l] = d1 * Float((ql[l] & 0x0F) + ((qh[l] & mask1) != 0 ? 16 : 0)) - m1 }
            for l in 0..<32 { y[32 + l] = d2 * Float((ql[l] >> 4) + ((qh[l] & mask2) != 0 ? 16 : 0)) - m2 }
            ql += 32
            y += 64
            mask1 <<= 2
            mask2 <<= 2
        }
    }
}

/// Q6_K: `{ u8 ql[128]; u8 qh[64]; i8 scales[16]; f16 d }`, 16 sub-blocks of 16 with 8-bit signed
/// scales; value = (d · scale) · (q − 32), q 6 bits (4 from ql, 2 from qh).
enum Q6_K: BlockFormat {
    static let elementsPerBlock = 256
    static let bytesPerBlock = 210
    @inline(__always) static func decode(_ block: UnsafeRawPointer, into output: UnsafeMutablePointer<Float>) {
        let d = block.half(at: 208)
        var ql = block.bytes(at: 0)
        var qh = block.bytes(at: 128)
        var sc = block.bytes(at: 192)
        var y = output
        for _ in 0..<2 {
            for l in 0..<32 {
                let s = l / 16
                let q1 = Int32((ql[l] & 0x0F) | (((qh[l] >> 0) & 3) << 4)) - 32
                let q2 = Int32((ql[l + 32] & 0x0F) | (((qh[l] >> 2) & 3) << 4)) - 32
                let q3 = Int32((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32
                let q4 = Int32((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32
                y[l] = d * Float(Int8(bitPattern: sc[s])) * Float(q1)
                y[l + 32] = d * Float(Int8(bitPattern: sc[s + 2])) * Float(q2)
                y[l + 64] = d * Float(Int8(bitPattern: sc[s + 4])) * Float(q3)
                y[l + 96] = d * Float(Int8(bitPattern: sc[s + 6])) * Float(q4)
            }
            y += 128
            ql += 64
            qh += 32
            sc += 8
        }
    }
}

/// Q8_K: `{ f32 d; i8 qs[256]; i16 bsums[16] }`; value = d · q (bsums are only for dot products).
enum Q8_K: BlockFormat {
    static let elementsPerBlock = 256
    static let bytesPerBlock = 292
    @inline(__always) static func decode(_ block: UnsafeRawPointer, into y: UnsafeMutablePointer<Float>) {
        let d = block.loadUnaligned(fromByteOffset: 0, as: Float.self)
        let qs = block.bytes(at: 4)
        for j in 0..<256 { y[j] = d * Float(Int8(bitPattern: qs[j])) }
    }
}

/// Converts stored elements of any `TensorDType` to Float.
enum ElementDecoder {
    /// Decodes elements `elements` of a tensor whose data starts at `data` into `destination`.
    ///
    /// The caller has checked that the tensor's bytes lie within the mapping and that `elements` lies
    /// within the tensor. Only the blocks overlapping `elements` are read.
    static func decode(_ dtype: TensorDType, data: UnsafeRawPointer, elements: Range<Int>,
                       into destination: UnsafeMutablePointer<Float>) {
        let start = elements.lowerBound, count = elements.count
        switch dtype {
        case .f32:
            UnsafeMutableRawPointer(destination).copyMemory(from: data + 4 * start, byteCount: 4 * count)
        case .f16:
            convert(data, UInt16.self, start, count, destination) { floatFromHalfBits($0) }
        case .bf16:
            convert(data, UInt16.self, start, count, destination) { floatFromBFloat16Bits($0) }
        case .f64:
            convert(data, Double.self, start, count, destination) { Float($0) }
        case .i8:
            convert(data, Int8.self, start, count, destination) { Float($0) }
        case .i16:
            convert(data, Int16.self, start, count, destination) { Float($0) }
        case .i32:
            convert(data, Int32.self, start, count, destination) { Float($0) }
        case .i64:
            convert(data, Int64.self, start, count, destination) { Float($0) }
        case .u8:
            convert(data, UInt8.self, start, count, destination) { Float($0) }
        case .bool:
            convert(data, UInt8.self, start, count, destination) { $0 != 0 ? 1 : 0 }
        case .q4_0: decodeBlocks(Q4_0.self, data, elements, destination)
        case .q4_1: decodeBlocks(Q4_1.self, data, elements, destination)
        case .q5_0: decodeBlocks(Q5_0.self, data, elements, destination)
        case .q5_1: decodeBlocks(Q5_1.self, data, elements, destination)
        case .q8_0: decodeBlocks(Q8_0.self, data, elements, destination)
        case .q2_k: decodeBlocks(Q2_K.self, data, elements, destination)
        case .q3_k: decodeBlocks(Q3_K.self, data, elements, destination)
        case .q4_k: decodeBlocks(Q4_K.self, data, elements, destination)
        case .q5_k: decodeBlocks(Q5_K.self, data, elements, destination)
        case .q6_k: decodeBlocks(Q6_K.self, data, elements, destination)
        case .q8_k: decodeBlocks(Q8_K.self, data, elements, destination)
        }
    }

    @inline(__always)
    private static func convert<Stored: BitwiseCopyable>(
        _ data: UnsafeRawPointer, _: Stored.Type, _ start: Int, _ count: Int,
        _ destination: UnsafeMutablePointer<Float>, _ transform: (Stored) -> Float
    ) {
        let stride = MemoryLayout<Stored>.stride
        let base = data + start * stride
        for i in 0..<count {
            destination[i] = transform(base.loadUnaligned(fromByteOffset: i * stride, as: Stored.self))
        }
    }

    /// Decodes whole blocks straight into `destination`; partial blocks at either end go through a
    /// scratch block and only the requested elements are copied out.
    private static func decodeBlocks<Format: BlockFormat>(
        _: Format.Type, _ data: UnsafeRawPointer, _ elements: Range<Int>, _ destination: UnsafeMutablePointer<Float>
    ) {
        let blockLength = Format.elementsPerBlock
        withUnsafeTemporaryAllocation(of: Float.self, capacity: blockLength) { scratch in
            let scratch = scratch.baseAddress!
            var element = elements.lowerBound
            var output = destination
            while element < elements.upperBound {
                let block = element / blockLength
                let within = element - block * blockLength
                let take = Swift.min(blockLength - within, elements.upperBound - element)
                let source = data + block * Format.bytesPerBlock
                if take == blockLength {
                    // Run of whole blocks: decode them all without re-deriving the block index.
                    let wholeBlocks = (elements.upperBound - element) / blockLength
                    var blockPointer = source
                    for _ in 0..<wholeBlocks {
                        Format.decode(blockPointer, into: output)
                        blockPointer += Format.bytesPerBlock
                        output += blockLength
                    }
                    element += wholeBlocks * blockLength
                } else {
                    Format.decode(source, into: scratch)
                    output.update(from: scratch + within, count: take)
                    output += take
                    element += take
                }
            }
        }
    }
}
