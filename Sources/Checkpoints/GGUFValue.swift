/// One GGUF metadata value, with the exact type it was stored as.
///
/// Arrays may nest (GGUF allows arrays of arrays). The typed accessors convert between numeric
/// types where the conversion is exact in meaning (`.int` accepts every integer type, `.double`
/// every number), and return nil otherwise.
public enum GGUFValue: Sendable, Equatable {
    case uint8(UInt8), int8(Int8), uint16(UInt16), int16(Int16)
    case uint32(UInt32), int32(Int32), uint64(UInt64), int64(Int64)
    case float32(Float), float64(Double)
    case bool(Bool)
    case string(String)
    case array([GGUFValue])

    /// The value as an Int, for any integer type (nil for a UInt64 above `Int.max`, or a non-integer).
    public var int: Int? {
        switch self {
        case .uint8(let v): Int(v)
        case .int8(let v): Int(v)
        case .uint16(let v): Int(v)
        case .int16(let v): Int(v)
        case .uint32(let v): Int(v)
        case .int32(let v): Int(v)
        case .uint64(let v): Int(exactly: v)
        case .int64(let v): Int(v)
        default: nil
        }
    }

    /// The value as a Double, for any numeric type.
    public var double: Double? {
        switch self {
        case .float32(let v): Double(v)
        case .float64(let v): v
        case .uint64(let v): Double(v)
        default: int.map { Double($0) }
        }
    }

    /// The value as a Float, for any numeric type (float64 and large integers are rounded).
    public var float: Float? {
        if case .float32(let v) = self { return v }
        return double.map { Float($0) }
    }

    /// The value if it is a bool.
    public var bool: Bool? {
        if case .bool(let v) = self { return v }
        return nil
    }

    /// The value if it is a string.
    public var string: String? {
        if case .string(let v) = self { return v }
        return nil
    }

    /// The elements if the value is an array.
    public var array: [GGUFValue]? {
        if case .array(let v) = self { return v }
        return nil
    }

    /// The elements if the value is an array of strings.
    public var stringArray: [String]? { array.flatMap { elements in mapAll(elements) { $0.string } } }

    /// The elements if the value is an array of integers (of any integer type).
    public var intArray: [Int]? { array.flatMap { elements in mapAll(elements) { $0.int } } }

    /// The elements if the value is an array of numbers, converted to Float.
    public var floatArray: [Float]? { array.flatMap { elements in mapAll(elements) { $0.float } } }

    /// The elements if the value is an array of numbers, converted to Double.
    public var doubleArray: [Double]? { array.flatMap { elements in mapAll(elements) { $0.double } } }

    /// The GGUF type name (`"uint32"`, `"string"`, `"array"`, …) as in the GGUF specification.
    public var typeName: String {
        switch self {
        case .uint8: "uint8"
        case .int8: "int8"
        case .uint16: "uint16"
        case .int16: "int16"
        case .uint32: "uint32"
        case .int32: "int32"
        case .uint64: "uint64"
        case .int64: "int64"
        case .float32: "float32"
        case .float64: "float64"
        case .bool: "bool"
        case .string: "string"
        case .array: "array"
        }
    }
}

private func mapAll<T>(_ elements: [GGUFValue], _ transform: (GGUFValue) -> T?) -> [T]? {
    var result: [T] = []
    result.reserveCapacity(elements.count)
    for element in elements {
        guard let value = transform(element) else { return nil }
        result.append(value)
    }
    return result
}
