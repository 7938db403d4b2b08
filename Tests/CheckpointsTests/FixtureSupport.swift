import Foundation
import Testing
@testable import Checkpoints

/// Fixtures written by tools/generate_checkpoint_fixtures.py (see its docstring for what each file is).
enum Fixtures {
    static let root: URL = {
        guard let url = Bundle.module.url(forResource: "Fixtures", withExtension: nil) else {
            fatalError("CheckpointsTests: the Fixtures resource is missing from the test bundle")
        }
        return url
    }()

    static func url(_ relativePath: String) -> URL { root.appendingPathComponent(relativePath) }

    /// Reads a raw little-endian float32 golden file.
    static func floats(_ relativePath: String) throws -> [Float] {
        let data = try Data(contentsOf: url(relativePath))
        return data.withUnsafeBytes { raw in
            (0..<(raw.count / 4)).map { Float(bitPattern: UInt32(littleEndian: raw.loadUnaligned(fromByteOffset: 4 * $0, as: UInt32.self))) }
        }
    }

    static func json<T: Decodable>(_ type: T.Type, _ relativePath: String) throws -> T {
        try JSONDecoder().decode(T.self, from: Data(contentsOf: url(relativePath)))
    }

    /// The package root, found from this file's path (Tests/CheckpointsTests/FixtureSupport.swift).
    static let packageRoot = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
}

/// One tensor of a fixture manifest (`*.json` next to the fixture files).
struct ManifestTensor: Decodable {
    var name: String
    var shape: [Int]
    var dtype: String?
    var golden: String
}

struct Manifest: Decodable {
    var file: String?
    var metadata: [String: String]?
    var tensors: [ManifestTensor]
}

/// A fresh temporary directory, removed by `cleanup()`.
struct TemporaryDirectory {
    let url: URL

    init(_ label: String = #function) throws {
        let name = "zero-sft-checkpoints-\(label.filter { $0.isLetter || $0.isNumber })-\(UUID().uuidString.prefix(8))"
        url = FileManager.default.temporaryDirectory.appendingPathComponent(name)
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
    }

    func file(_ name: String) -> URL { url.appendingPathComponent(name) }

    func cleanup() { try? FileManager.default.removeItem(at: url) }

    /// Names of the directory's entries, hidden ones included.
    func contents() -> [String] { ((try? FileManager.default.contentsOfDirectory(atPath: url.path)) ?? []).sorted() }
}

/// Expects `actual` to equal `expected` bit for bit (so -0.0 ≠ 0.0 and infinities count), reporting
/// the first mismatches with their index, values and difference.
func expectBitwiseEqual(_ actual: [Float], _ expected: some Collection<Float>, _ what: String,
                        sourceLocation: SourceLocation = #_sourceLocation) {
    let expected = Array(expected)
    guard actual.count == expected.count else {
        Issue.record("\(what): got \(actual.count) elements, expected \(expected.count)", sourceLocation: sourceLocation)
        return
    }
    var mismatches: [String] = []
    var mismatchCount = 0
    for i in 0..<actual.count where actual[i].bitPattern != expected[i].bitPattern {
        mismatchCount += 1
        if mismatches.count < 4 {
            mismatches.append("[\(i)] got \(actual[i]), expected \(expected[i]) (diff \(actual[i] - expected[i]))")
        }
    }
    if mismatchCount > 0 {
        Issue.record("\(what): \(mismatchCount) of \(actual.count) elements differ: \(mismatches.joined(separator: "; "))",
                     sourceLocation: sourceLocation)
    }
}

/// Runs `body`, expecting a `CheckpointError` of `kind` that names `path` (if given) and `tensor` (if
/// given), and whose description contains each of `mentions`. Returns the error.
@discardableResult
func expectCheckpointError(_ kind: CheckpointError.Kind, path: String? = nil, tensor: String? = nil,
                           mentions: [String] = [], sourceLocation: SourceLocation = #_sourceLocation,
                           _ body: () throws -> Void) -> CheckpointError? {
    do {
        try body()
        Issue.record("expected a CheckpointError '\(kind)', but nothing was thrown", sourceLocation: sourceLocation)
        return nil
    } catch let error as CheckpointError {
        #expect(error.kind == kind, "kind: got '\(error.kind)', expected '\(kind)' (\(error))", sourceLocation: sourceLocation)
        if let path { #expect(error.path == path, "path: got '\(error.path)', expected '\(path)'", sourceLocation: sourceLocation) }
        if let tensor {
            #expect(error.tensor == tensor, "tensor: got \(error.tensor ?? "nil"), expected '\(tensor)' (\(error))",
                    sourceLocation: sourceLocation)
        }
        for phrase in mentions {
            #expect(error.description.contains(phrase), "description lacks '\(phrase)': \(error)", sourceLocation: sourceLocation)
        }
        return error
    } catch {
        Issue.record("expected a CheckpointError '\(kind)', got \(type(of: error)): \(error)", sourceLocation: sourceLocation)
        return nil
    }
}

/// Element ranges worth testing on a tensor of `count` elements stored in blocks of `block`:
/// whole, interior, odd offsets, block-boundary crossings, single elements, the tail, empty.
func interestingRanges(count: Int, block: Int) -> [Range<Int>] {
    var ranges: [Range<Int>] = [0..<count, 0..<0, count..<count]
    if count >= 1 { ranges += [0..<1, (count - 1)..<count] }
    if count >= 3 { ranges += [1..<(count - 1), (count / 2)..<(count / 2 + 1)] }
    if count >= 70 { ranges += [7..<68, 3..<(count - 5)] }
    if block > 1, count > block + 1 { ranges += [(block - 1)..<(block + 1), block..<(2 * block), 1..<block] }
    if count >= 3 * block + 5, block > 1 { ranges.append((block + 3)..<(3 * block + 5)) }
    return ranges
}

/// Writes `bytes` to `url`.
func writeBytes(_ bytes: [UInt8], to url: URL) throws {
    try Data(bytes).write(to: url)
}

/// The bytes of a fixture file.
func fixtureBytes(_ relativePath: String) throws -> [UInt8] {
    [UInt8](try Data(contentsOf: Fixtures.url(relativePath)))
}
