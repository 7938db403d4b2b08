import Kernels
import Models

/// How much of the training state each rank keeps (ZeRO, Rajbhandari et al. 2020).
public enum ZeroStage: Int, Codable, Sendable, CaseIterable, CustomStringConvertible {
    /// Data parallel: every rank holds everything; gradients are all-reduced.
    case zero = 0
    /// AdamW moments sharded; gradients reduce-scattered after the last micro-batch; parameters all-gathered after the update.
    case one = 1
    /// As 1, and gradients are reduce-scattered unit by unit during the backward: a rank keeps only its gradient shard.
    case two = 2
    /// As 2, and only the parameter shard persists: units are all-gathered just before use and freed after.
    case three = 3

    public var description: String { "stage \(rawValue)" }
    public var shardsMoments: Bool { self != .zero }
    public var shardsGradients: Bool { self == .two || self == .three }
    public var shardsParameters: Bool { self == .three }
}

/// One unit's flat buffer split into `ranks` equal contiguous shards (padded at the end).
public struct ShardedUnit: Sendable, Equatable {
    public var name: String
    /// Elements, without padding.
    public var count: Int
    /// Elements of one shard: `ceil(count / ranks)`.
    public var shardCount: Int
    public var ranks: Int
    /// `shardCount × ranks ≥ count`: the buffer that all-gathers produce.
    public var paddedCount: Int { shardCount * ranks }
    public var padding: Int { paddedCount - count }
    /// The elements rank `r` owns.
    public func range(rank r: Int) -> Range<Int> { (r * shardCount)..<((r + 1) * shardCount) }
}

/// The sharding of a model's units over `ranks` ranks: which rank holds which range of which unit.
public struct ShardPlan: Sendable, Equatable {
    public var ranks: Int
    public var units: [ShardedUnit]

    public init(layout: ParameterLayout, ranks: Int) {
        precondition(ranks >= 1, "ShardPlan: \(ranks) ranks")
        self.ranks = ranks
        units = layout.units.map { unit in
            ShardedUnit(name: unit.name, count: unit.count, shardCount: (unit.count + ranks - 1) / ranks, ranks: ranks)
        }
    }

    public var parameterCount: Int { units.reduce(0) { $0 + $1.count } }
    public var paddedCount: Int { units.reduce(0) { $0 + $1.paddedCount } }
    /// Elements one rank owns across all units (the same on every rank).
    public var shardCount: Int { units.reduce(0) { $0 + $1.shardCount } }
    public var largestUnit: Int { units.map(\.paddedCount).max() ?? 0 }

    /// The offsets table of one rank's flat buffer of a role: each unit's shard (`sharded`) or each
    /// whole padded unit, one after another in unit order.
    public func flatLayout(sharded: Bool, rank: Int) -> FlatLayout {
        var entries: [FlatLayout.Entry] = [], offset = 0
        for unit in units {
            let elements = sharded ? unit.range(rank: rank) : 0..<unit.paddedCount
            entries.append(FlatLayout.Entry(elements: elements, offset: offset))
            offset += elements.count
        }
        return FlatLayout(entries: entries, count: offset)
    }

    /// A table for `--debug`: units, sizes, padding and each rank's range.
    public func describe() -> String {
        var lines = ["sharding plan: \(units.count) units, \(parameterCount) parameters, \(ranks) rank(s), "
                     + "\(shardCount) elements per rank (\(paddedCount - parameterCount) padding)"]
        lines.append("  unit              elements      shard   padding  ranges")
        for unit in units {
            let ranges = (0..<ranks).map { r -> String in
                let range = unit.range(rank: r)
                return "r\(r) \(range.lowerBound)..<\(range.upperBound)"
            }
            let shown = ranks <= 4 ? ranges.joined(separator: ", ") : ranges.prefix(2).joined(separator: ", ") + ", …, " + ranges.last!
            lines.append("  " + unit.name.padding(toLength: 14, withPad: " ", startingAt: 0)
                         + String(unit.count).leftPadded(12) + String(unit.shardCount).leftPadded(11)
                         + String(unit.padding).leftPadded(10) + "  " + shown)
        }
        return lines.joined(separator: "\n")
    }
}

extension String {
    func leftPadded(_ width: Int) -> String { count >= width ? self : String(repeating: " ", count: width - count) + self }
}

/// Where each unit's part of one role (parameters, gradients, AdamW `m` or `v`) sits in a rank's one
/// flat buffer of that role: unit `u`'s global elements `entries[u].elements` (its shard, or the
/// whole padded unit) at `entries[u].offset …`. Every role of a rank uses the same unit order, so
/// the shards of parameters, gradients and moments line up wherever they have the same extent
/// (all of them at stage 3), and a role's shard is one contiguous range to write or read.
public struct FlatLayout: Sendable, Equatable {
    public struct Entry: Sendable, Equatable {
        /// The unit's elements held (global indices within the unit's padded flat buffer).
        public var elements: Range<Int>
        /// Where the first of them sits in the role's buffer.
        public var offset: Int
        /// The buffer range holding them.
        public var range: Range<Int> { offset..<(offset + elements.count) }
    }
    public var entries: [Entry]
    /// Elements of the whole buffer.
    public var count: Int

    /// The buffer offset of element `element` of unit `unit`, or nil when this rank does not hold it.
    public func offset(unit: Int, element: Int) -> Int? {
        let entry = entries[unit]
        return entry.elements.contains(element) ? entry.offset + element - entry.elements.lowerBound : nil
    }

    /// The buffer range of global elements `elements` of `unit` (which must be held).
    public func range(unit: Int, elements: Range<Int>) -> Range<Int> {
        let entry = entries[unit]
        precondition(elements.clamped(to: entry.elements) == elements, "FlatLayout: elements \(elements) of unit \(unit) not held (\(entry.elements))")
        let start = entry.offset + elements.lowerBound - entry.elements.lowerBound
        return start..<(start + elements.count)
    }
}

/// One rank's flat buffer of a role and its offsets table.
public final class RoleBuffer {
    public let layout: FlatLayout
    public let storage: FloatBuffer

    /// - Parameter prefault: write the buffer's pages at once (``FloatBuffer/init(count:prefault:)``):
    ///   for the roles every step writes in full (gradients, moments).
    public init(layout: FlatLayout, prefault: Bool = false) {
        self.layout = layout
        storage = FloatBuffer(count: layout.count, prefault: prefault)
    }

    public var bytes: Int { storage.bytes }
    /// The part of unit `unit` this rank holds.
    @inline(__always)
    public func unit(_ unit: Int) -> UnsafeMutableBufferPointer<Float> { storage.slice(layout.entries[unit].range) }
    /// Global elements `elements` of unit `unit`.
    @inline(__always)
    public func elements(_ elements: Range<Int>, of unit: Int) -> UnsafeMutableBufferPointer<Float> {
        storage.slice(layout.range(unit: unit, elements: elements))
    }
}
