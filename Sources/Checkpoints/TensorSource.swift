import Foundation

/// The name, shape and element type of one stored tensor.
public struct TensorInfo: Sendable, Equatable {
    /// The tensor's name as stored in the file (HF names for safetensors, llama.cpp names for GGUF).
    public var name: String
    /// Dimensions in row-major order, outermost first (PyTorch/HF order). For GGUF this is ggml's
    /// `ne[]` reversed, so that a GGUF tensor has the same shape as the HF tensor it was converted from.
    public var shape: [Int]
    /// The stored element type.
    public var dtype: TensorDType

    public init(name: String, shape: [Int], dtype: TensorDType) {
        self.name = name
        self.shape = shape
        self.dtype = dtype
    }

    /// The number of elements (the product of `shape`; 1 for a scalar).
    public var elementCount: Int { shape.reduce(1, *) }
}

/// Anything that can hand out tensors as Float32, whole or by element range (row-major order).
///
/// Conforming types in this module (`SafetensorsFile`, `ShardedSafetensors`, `GGUFFile`) memory-map
/// their files, so a ranged read touches only the pages holding the requested elements (for
/// block-quantised types, only the blocks that overlap the range).
public protocol TensorSource {
    /// Every tensor of the source, by name.
    var tensors: [String: TensorInfo] { get }

    /// Where the tensors come from (a file path), for error messages.
    var location: String { get }

    /// Reads elements `elements` (indices into the row-major flattening) of tensor `name`, converted to Float, into `destination` (count == elements.count).
    ///
    /// Reads only the bytes needed (for block-quantised types, only the blocks that overlap).
    /// Throws `CheckpointError` (`.tensorNotFound`, `.elementRangeOutOfBounds`) naming the file and tensor.
    /// - Precondition: `destination.count == elements.count`.
    func read(_ name: String, elements: Range<Int>, into destination: UnsafeMutableBufferPointer<Float>) throws
}

extension TensorSource {
    public var location: String { String(describing: Self.self) }

    /// The info of tensor `name`, or a `.tensorNotFound` error naming the source.
    public func info(_ name: String) throws -> TensorInfo {
        guard let info = tensors[name] else {
            throw CheckpointError.tensorNotFound(name, in: location, available: tensors.keys)
        }
        return info
    }

    /// Reads the whole tensor `name` converted to Float, in row-major order.
    public func read(_ name: String) throws -> [Float] {
        let count = try info(name).elementCount
        return try [Float](unsafeUninitializedCapacity: count) { buffer, initialized in
            try read(name, elements: 0..<count, into: buffer)
            initialized = count
        }
    }

    /// Reads elements `elements` of tensor `name` into a new array.
    public func read(_ name: String, elements: Range<Int>) throws -> [Float] {
        try [Float](unsafeUninitializedCapacity: elements.count) { buffer, initialized in
            try read(name, elements: elements, into: buffer)
            initialized = elements.count
        }
    }
}

/// The safetensors weights of an HF model directory, chosen as transformers chooses them.
///
/// transformers' `from_pretrained` (`_get_resolved_checkpoint_files`) takes `model.safetensors` when it
/// exists and only otherwise `model.safetensors.index.json`; `save_pretrained` into a directory that held
/// the other form leaves both behind. The single file therefore wins, and the shadowed index is reported
/// so the caller can warn.
public enum SafetensorsWeights: Equatable, Sendable {
    /// `model.safetensors`, and the index file that is also there and ignored, if any.
    case single(URL, shadowedIndex: URL?)
    /// `model.safetensors.index.json` (no `model.safetensors` beside it).
    case sharded(indexURL: URL)

    /// The weights in `directory`, or nil when it has neither file.
    public static func find(in directory: URL) -> SafetensorsWeights? {
        let single = directory.appendingPathComponent("model.safetensors")
        let index = directory.appendingPathComponent("model.safetensors.index.json")
        let hasIndex = FileManager.default.fileExists(atPath: index.path)
        if FileManager.default.fileExists(atPath: single.path) { return .single(single, shadowedIndex: hasIndex ? index : nil) }
        return hasIndex ? .sharded(indexURL: index) : nil
    }
}

/// Opens a directory (model.safetensors or model.safetensors.index.json), a .safetensors file, or a .gguf file.
///
/// A directory's weights are those ``SafetensorsWeights/find(in:)`` picks (`model.safetensors` first, as
/// transformers), else its single `.gguf` file. A file is recognised by content: the GGUF magic selects
/// `GGUFFile`; a name ending in `.json` selects `ShardedSafetensors`; anything else is read as safetensors.
/// (`--model` is resolved by `ModelIO.ModelSource`, which also checks names and shapes; this is the
/// tensor-level reader for tools and tests.)
public func openTensorSource(at url: URL) throws -> any TensorSource {
    var isDirectory: ObjCBool = false
    guard FileManager.default.fileExists(atPath: url.path, isDirectory: &isDirectory) else {
        throw CheckpointError(.unreadableFile, path: url.path, expected: "a checkpoint file or directory",
                              found: "nothing at this path")
    }
    if isDirectory.boolValue {
        switch SafetensorsWeights.find(in: url) {
        case .single(let single, _)?: return try SafetensorsFile(url: single)
        case .sharded(let index)?: return try ShardedSafetensors(indexURL: index)
        case nil: break
        }
        let ggufFiles = ((try? FileManager.default.contentsOfDirectory(atPath: url.path)) ?? [])
            .filter { $0.hasSuffix(".gguf") }
        if ggufFiles.count == 1 { return try GGUFFile(url: url.appendingPathComponent(ggufFiles[0])) }
        throw CheckpointError(.unreadableFile, path: url.path,
                              expected: "model.safetensors, model.safetensors.index.json or a single .gguf file in the directory",
                              found: ggufFiles.isEmpty ? "none of them" : "\(ggufFiles.count) .gguf files")
    }
    if url.pathExtension.lowercased() == "json" { return try ShardedSafetensors(indexURL: url) }
    if try MappedFile.startsWithGGUFMagic(path: url.path) { return try GGUFFile(url: url) }
    return try SafetensorsFile(url: url)
}
