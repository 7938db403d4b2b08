internal import CMPI

/// A collective operation that failed: which one, on which rank, with what counts, and why.
///
/// MPI errors arrive here because the communicator uses `MPI_ERRORS_RETURN`: the MPI call
/// returns its error code instead of aborting the job, and the wrapper throws this error.
public struct CollectiveError: Error, CustomStringConvertible, Sendable {
    /// The MPI function or wrapper that failed, e.g. `MPI_Allgather`.
    public var operation: String
    /// The rank that observed the failure.
    public var rank: Int
    /// The number of ranks in the communicator.
    public var size: Int
    /// The MPI error code, or `nil` when the failure was detected before calling MPI.
    public var errorCode: Int32?
    /// The MPI error class of ``errorCode`` (`MPI_Error_class`).
    public var errorClass: Int32?
    /// MPI's error string (`MPI_Error_string`) or the wrapper's own explanation.
    public var reason: String
    /// The arguments of the call: element type, counts, root, piece of a chunked call.
    public var details: String

    public init(
        operation: String, rank: Int, size: Int, errorCode: Int32? = nil, errorClass: Int32? = nil,
        reason: String, details: String = ""
    ) {
        self.operation = operation
        self.rank = rank
        self.size = size
        self.errorCode = errorCode
        self.errorClass = errorClass
        self.reason = reason
        self.details = details
    }

    public var description: String {
        var text = "\(operation) failed on rank \(rank) of \(size)"
        if !details.isEmpty { text += " (\(details))" }
        text += ": \(reason)"
        if let errorCode {
            text += " [MPI error code \(errorCode)"
            if let errorClass, errorClass != errorCode { text += ", class \(errorClass)" }
            text += "]"
        }
        return text
    }
}

extension CollectiveError {
    /// The error of a failed `MPI_Waitall` / `MPI_Testall`, with the first failing request's own
    /// code when MPI reports `MPI_ERR_IN_STATUS`.
    init(completing operation: String, code: Int32, statuses: [MPI_Status], rank: Int, size: Int, details: String) {
        var failing = code
        if code == zsft_err_in_status(), let status = statuses.first(where: { $0.MPI_ERROR != zsft_success() }) {
            failing = status.MPI_ERROR
        }
        self.init(operation: operation, rank: rank, size: size, errorCode: failing, errorClass: mpiErrorClass(failing),
                  reason: mpiErrorString(failing), details: details)
    }
}

/// MPI's text for an error code (`MPI_Error_string`), or a fallback when MPI cannot describe it.
func mpiErrorString(_ code: Int32) -> String {
    var buffer = [CChar](repeating: 0, count: Int(zsft_max_error_string()) + 1)
    var length: Int32 = 0
    guard MPI_Error_string(code, &buffer, &length) == zsft_success() else {
        return "unknown MPI error \(code)"
    }
    let bytes = buffer.prefix(Int(length)).map { UInt8(bitPattern: $0) }
    return String(decoding: bytes, as: UTF8.self)
}

/// The error class of an MPI error code (`MPI_Error_class`), or `nil` when MPI cannot tell.
func mpiErrorClass(_ code: Int32) -> Int32? {
    var errorClass: Int32 = 0
    return MPI_Error_class(code, &errorClass) == zsft_success() ? errorClass : nil
}
