import Foundation

/// A checkpoint split over several safetensors files, described by an HF index
/// (`model.safetensors.index.json`: `{"metadata": {...}, "weight_map": {"<tensor>": "<shard file>"}}`).
///
/// Shards are resolved relative to the index's directory and memory-mapped on open; the weight map is
/// authoritative (tensors a shard holds but the map does not list are not exposed).
public struct ShardedSafetensors: TensorSource, Sendable {
    /// The index file's location.
    public let indexURL: URL
    /// The index's `weight_map`: tensor name → shard file name.
    public let weightMap: [String: String]
    /// The index's `metadata` values rendered as strings (HF stores `total_size` as a number).
    public let metadata: [String: String]
    /// Each shard, by file name as written in the weight map.
    public let shards: [String: SafetensorsFile]
    /// Every tensor of every shard listed in the weight map, by name.
    public let tensors: [String: TensorInfo]

    public var location: String { indexURL.path }

    /// Reads the index and opens every shard it names, checking that each listed tensor is in its shard.
    /// Throws `CheckpointError`: `.unreadableFile`/`.malformedHeader` for the index, the shard's own
    /// errors, and `.tensorNotFound` (with the shard's path) when a listed tensor is missing.
    public init(indexURL: URL) throws {
        let path = indexURL.path
        let data: Data
        do {
            data = Data(try FileContents.read(path))
        } catch {
            throw CheckpointError(.unreadableFile, path: path, expected: "a safetensors index (model.safetensors.index.json)",
                                  found: "\(error.operation) failed: \(error.reason)")
        }
        let index: Index
        do {
            index = try JSONDecoder().decode(Index.self, from: JSONLastKeyWins.normalized(data))   // a repeated key: the last, as json.load
        } catch let error as DecodingError {
            throw CheckpointError.fromDecodingError(error, path: path)
        }

        let directory = indexURL.deletingLastPathComponent()
        var shards: [String: SafetensorsFile] = [:]
        for shardName in Set(index.weightMap.values).sorted() {
            guard !shardName.isEmpty, !shardName.hasPrefix("/") else {
                throw CheckpointError(.malformedHeader, path: path, expected: "shard file names relative to the index",
                                      found: "'\(shardName)'")
            }
            shards[shardName] = try SafetensorsFile(url: directory.appendingPathComponent(shardName))
        }
        var tensors: [String: TensorInfo] = [:]
        for (name, shardName) in index.weightMap {
            guard let shard = shards[shardName], let info = shard.tensors[name] else {
                throw CheckpointError(.tensorNotFound, path: directory.appendingPathComponent(shardName).path, tensor: name,
                                      expected: "the tensor listed for this shard in \(indexURL.lastPathComponent)",
                                      found: "no such tensor in the shard")
            }
            tensors[name] = info
        }
        self.indexURL = indexURL
        self.weightMap = index.weightMap
        self.metadata = index.metadata
        self.shards = shards
        self.tensors = tensors
    }

    public func read(_ name: String, elements: Range<Int>, into destination: UnsafeMutableBufferPointer<Float>) throws {
        guard let shardName = weightMap[name], let shard = shards[shardName] else {
            throw CheckpointError.tensorNotFound(name, in: indexURL.path, available: tensors.keys)
        }
        try shard.read(name, elements: elements, into: destination)
    }

    private struct Index: Decodable {
        var metadata: [String: String] = [:]
        var weightMap: [String: String]

        enum CodingKeys: String, CodingKey {
            case metadata
            case weightMap = "weight_map"
        }

        init(from decoder: Decoder) throws {
            let container = try decoder.container(keyedBy: CodingKeys.self)
            weightMap = try container.decode([String: String].self, forKey: .weightMap)
            if container.contains(.metadata), try !container.decodeNil(forKey: .metadata) {
                let raw = try container.decode([String: MetadataScalar].self, forKey: .metadata)
                metadata = raw.mapValues(\.text)
            }
        }
    }

    /// A JSON scalar in the index metadata (HF writes `"total_size": 123`).
    private struct MetadataScalar: Decodable {
        var text: String
        init(from decoder: Decoder) throws {
            let container = try decoder.singleValueContainer()
            if let value = try? container.decode(Int.self) { text = String(value) }
            else if let value = try? container.decode(Double.self) { text = String(value) }
            else if let value = try? container.decode(Bool.self) { text = String(value) }
            else if container.decodeNil() { text = "null" }
            else { text = try container.decode(String.self) }
        }
    }
}
