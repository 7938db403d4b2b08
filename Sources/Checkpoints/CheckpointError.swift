/// An error reading or writing a checkpoint file, with the file, the tensor and what was expected vs found.
///
/// Every throwing API of this module throws `CheckpointError`. Its `description` is a complete,
/// user-facing sentence such as
/// `model.gguf: tensor 'blk.3.ffn_up.weight': truncated file: expected tensor data in bytes [..), found a file of 1000 bytes`.
public struct CheckpointError: Error, CustomStringConvertible, Sendable, Equatable {
    /// What went wrong, as a category that callers can match on.
    public struct Kind: Hashable, Sendable, CustomStringConvertible {
        /// A short phrase naming the category, used in `CheckpointError.description`.
        public let description: String
        init(_ description: String) { self.description = description }

        /// The file could not be opened, examined or mapped (missing, a directory, no permission).
        public static let unreadableFile = Kind("cannot read file")
        /// The file does not start with the expected magic bytes (or the header is not a JSON object).
        public static let badMagic = Kind("wrong magic")
        /// The format version is not one this reader understands.
        public static let unsupportedVersion = Kind("unsupported format version")
        /// The file ends before a structure (header, metadata, tensor data) that it declares.
        public static let truncated = Kind("truncated file")
        /// The header is present but malformed (bad JSON, wrong value types, impossible counts).
        public static let malformedHeader = Kind("malformed header")
        /// A tensor uses an element type this module cannot convert to Float.
        public static let unsupportedDType = Kind("unsupported tensor type")
        /// A tensor's byte size, offsets or alignment disagree with its shape and type.
        public static let inconsistentTensor = Kind("inconsistent tensor")
        /// Two tensors claim overlapping bytes of the data region.
        public static let overlappingTensors = Kind("overlapping tensors")
        /// The same tensor name appears twice.
        public static let duplicateTensor = Kind("duplicate tensor")
        /// The requested tensor does not exist in this source.
        public static let tensorNotFound = Kind("no such tensor")
        /// A ranged read asked for elements outside the tensor.
        public static let elementRangeOutOfBounds = Kind("element range out of bounds")
        /// The writer refused to replace an existing file (pass `overwrite: true` to allow it).
        public static let fileExists = Kind("file already exists")
        /// Creating, writing or renaming the output file failed.
        public static let writeFailed = Kind("write failed")
        /// A file's checksum differs from the one its manifest records (a training checkpoint's shard).
        public static let checksumMismatch = Kind("checksum mismatch")
        /// A training checkpoint without its completion marker, or with files missing: a save that did not finish.
        public static let incompleteCheckpoint = Kind("incomplete checkpoint")
    }

    /// The category of the failure.
    public var kind: Kind
    /// The file concerned (the shard, not the index, when a shard is at fault).
    public var path: String
    /// The tensor concerned, if any.
    public var tensor: String?
    /// What the reader or writer expected, in words (for example `"GGUF magic 'GGUF'"`).
    public var expected: String?
    /// What it found instead.
    public var found: String?

    /// Creates an error; prefer the specific static constructors where they fit.
    public init(_ kind: Kind, path: String, tensor: String? = nil, expected: String? = nil, found: String? = nil) {
        self.kind = kind
        self.path = path
        self.tensor = tensor
        self.expected = expected
        self.found = found
    }

    public var description: String {
        var text = path.isEmpty ? "" : "\(path): "
        if let tensor { text += "tensor '\(tensor)': " }
        text += kind.description
        switch (expected, found) {
        case let (expected?, found?): text += ": expected \(expected), found \(found)"
        case let (expected?, nil): text += ": expected \(expected)"
        case let (nil, found?): text += ": \(found)"
        case (nil, nil): break
        }
        return text
    }
}

extension CheckpointError {
    static func tensorNotFound(_ name: String, in path: String, available: some Collection<String>) -> CheckpointError {
        let sample = available.sorted().prefix(5).map { "'\($0)'" }.joined(separator: ", ")
        let more = available.count > 5 ? ", … (\(available.count) tensors)" : ""
        return CheckpointError(.tensorNotFound, path: path, tensor: name,
                               expected: "one of the file's tensors", found: available.isEmpty ? "no tensors" : sample + more)
    }

    static func rangeOutOfBounds(_ elements: Range<Int>, tensor: TensorInfo, in path: String) -> CheckpointError {
        CheckpointError(.elementRangeOutOfBounds, path: path, tensor: tensor.name,
                        expected: "a range within 0..<\(tensor.elementCount) (shape \(tensor.shape))",
                        found: "\(elements.lowerBound)..<\(elements.upperBound)")
    }
}
