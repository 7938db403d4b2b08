internal import CMPI

/// The element types a collective can move: each maps to one predefined MPI datatype.
///
/// The conforming types are `Float`, `Double`, `Int32`, `Int64`, `UInt8` and `UInt16` (bf16 patterns
/// under `--param-dtype bf16`). Do not add
/// conformances of your own: the communicator sends `MemoryLayout<Self>.stride` bytes per element
/// as the datatype named by ``collectiveElementKind`` and checks the two agree.
public protocol CollectiveElement: Sendable {
    /// The wire type of this element (its MPI datatype).
    static var collectiveElementKind: CollectiveElementKind { get }
}

/// The wire types of ``CollectiveElement``, one per predefined MPI datatype.
public enum CollectiveElementKind: Sendable, Equatable, CustomStringConvertible {
    /// 32-bit IEEE float, `MPI_FLOAT`.
    case float32
    /// 64-bit IEEE float, `MPI_DOUBLE`.
    case float64
    /// 32-bit signed integer, `MPI_INT32_T`.
    case int32
    /// 64-bit signed integer, `MPI_INT64_T`.
    case int64
    /// 8-bit unsigned integer, `MPI_UINT8_T` (sums wrap modulo 256).
    case uint8
    /// 16-bit unsigned integer, `MPI_UINT16_T`: bf16 bit patterns on the wire (moved, never reduced).
    case uint16

    /// Bytes per element.
    public var byteCount: Int {
        switch self {
        case .float32, .int32: 4
        case .float64, .int64: 8
        case .uint8: 1
        case .uint16: 2
        }
    }

    /// The Swift name of the type, for messages.
    public var description: String {
        switch self {
        case .float32: "Float"
        case .float64: "Double"
        case .int32: "Int32"
        case .int64: "Int64"
        case .uint8: "UInt8"
        case .uint16: "UInt16"
        }
    }

    /// The predefined MPI datatype.
    var mpiDatatype: MPI_Datatype? {
        switch self {
        case .float32: zsft_float()
        case .float64: zsft_double()
        case .int32: zsft_int32()
        case .int64: zsft_int64()
        case .uint8: zsft_uint8()
        case .uint16: zsft_uint16()
        }
    }
}

extension Float: CollectiveElement {
    public static var collectiveElementKind: CollectiveElementKind { .float32 }
}
extension Double: CollectiveElement {
    public static var collectiveElementKind: CollectiveElementKind { .float64 }
}
extension Int32: CollectiveElement {
    public static var collectiveElementKind: CollectiveElementKind { .int32 }
}
extension Int64: CollectiveElement {
    public static var collectiveElementKind: CollectiveElementKind { .int64 }
}
extension UInt8: CollectiveElement {
    public static var collectiveElementKind: CollectiveElementKind { .uint8 }
}
extension UInt16: CollectiveElement {
    public static var collectiveElementKind: CollectiveElementKind { .uint16 }
}

/// The reduction applied element-wise across ranks by `allReduce` and `reduceScatter`.
public enum ReductionOperation: Sendable, Equatable, CustomStringConvertible {
    /// Element-wise sum, `MPI_SUM`. Floating-point sums depend on the order MPI chooses, which
    /// depends on the number of ranks; integer sums wrap.
    case sum
    /// Element-wise maximum, `MPI_MAX`.
    case max
    /// Element-wise minimum, `MPI_MIN`.
    case min

    public var description: String {
        switch self {
        case .sum: "sum"
        case .max: "max"
        case .min: "min"
        }
    }

    var mpiOperation: MPI_Op? {
        switch self {
        case .sum: zsft_op_sum()
        case .max: zsft_op_max()
        case .min: zsft_op_min()
        }
    }
}

extension CollectiveElement {
    /// The MPI datatype of `Self`, after checking the conformance is honest about its size.
    static var checkedMPIDatatype: MPI_Datatype? {
        let kind = collectiveElementKind
        precondition(
            MemoryLayout<Self>.stride == kind.byteCount,
            "\(Self.self) claims wire type \(kind) (\(kind.byteCount) bytes) but has stride \(MemoryLayout<Self>.stride)")
        return kind.mpiDatatype
    }
}
