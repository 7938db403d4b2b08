import Checkpoints
import Foundation
import Kernels
import Models
import Sharding
import Testing
import Training

/// The offsets tables of the flat per-role buffers, the AdamW segments built on them, and the
/// tensor order the stage-3 export walks.
@Suite struct FlatLayoutTests {
    static let config = ModelPreset.config(named: "tiny")!
    static let layout = ParameterLayout(config: config)

    /// Units one after another, each whole (padded) or one shard; every held element maps to one
    /// offset and back; elements not held map to nothing.
    @Test func offsetsTableCoversEachRoleContiguously() {
        let plan = ShardPlan(layout: Self.layout, ranks: 3)
        for sharded in [false, true] {
            for rank in 0..<3 {
                let table = plan.flatLayout(sharded: sharded, rank: rank)
                var next = 0
                for (index, entry) in table.entries.enumerated() {
                    let unit = plan.units[index]
                    #expect(entry.offset == next, "unit \(index): offset \(entry.offset), expected \(next)")
                    #expect(entry.elements == (sharded ? unit.range(rank: rank) : 0..<unit.paddedCount))
                    next += entry.elements.count
                    for element in [entry.elements.lowerBound, entry.elements.upperBound - 1] {
                        let offset = table.offset(unit: index, element: element)
                        #expect(offset == entry.offset + element - entry.elements.lowerBound)
                    }
                    if sharded {
                        #expect(table.offset(unit: index, element: (entry.elements.upperBound) % unit.paddedCount) == nil)
                    }
                    #expect(table.range(unit: index, elements: entry.elements) == entry.range)
                }
                #expect(table.count == next && table.count == (sharded ? plan.shardCount : plan.paddedCount))
            }
        }
    }

    /// The segments cover exactly the elements a rank owns, once, decaying exactly the matrices;
    /// at stage 3 without weight decay the step is one pass over the whole buffer.
    @Test func adamWSegmentsAreTheOwnedElementsWithTheirDecay() {
        let plan = ShardPlan(layout: Self.layout, ranks: 3)
        for stage in ZeroStage.allCases {
            for rank in 0..<3 {
                let parameters = plan.flatLayout(sharded: stage.shardsParameters, rank: rank)
                let gradients = plan.flatLayout(sharded: stage.shardsGradients, rank: rank)
                let adamW = ShardedAdamW(optimizer: AdamW(weightDecay: 0.1), layout: Self.layout, plan: plan, stage: stage,
                                         rank: rank, parameters: parameters, gradients: gradients)
                // Expected: for every owned element, its parameter offset and whether it decays.
                var expected: [Int: Bool] = [:]
                for (index, unit) in plan.units.enumerated() {
                    let owned = stage == .zero ? 0..<unit.paddedCount : unit.range(rank: rank)
                    for element in owned {
                        let tensor = Self.layout.units[index].tensors.first { $0.range.contains(element) }
                        expected[parameters.offset(unit: index, element: element)!] = tensor?.decays ?? false
                    }
                }
                var seen: [Int: Bool] = [:]
                for segment in adamW.segments {
                    for i in 0..<segment.count {
                        #expect(seen[segment.parameters + i] == nil, "\(stage) rank \(rank): element at \(segment.parameters + i) twice")
                        seen[segment.parameters + i] = segment.decays
                    }
                }
                #expect(seen == expected, "\(stage) rank \(rank): segments cover \(seen.count) elements, expected \(expected.count)")
            }
        }
        let stage3 = plan.flatLayout(sharded: true, rank: 1)
        let plain = ShardedAdamW(optimizer: AdamW(), layout: Self.layout, plan: plan, stage: .three, rank: 1,
                                 parameters: stage3, gradients: stage3)
        #expect(plain.segments.count == 1, "\(plain.segments.count) segments at stage 3 without decay")
        if let only = plain.segments.first {
            #expect(only.parameters == 0 && only.gradients == 0 && only.moments == 0 && only.count == stage3.count && !only.decays)
        }
    }

    /// The writer asks for tensors in the order it publishes (the order every rank's gathers follow).
    @Test func safetensorsWriterWritesInItsPublishedOrder() throws {
        let tensors = Self.layout.units.flatMap { $0.tensors.map { (name: $0.name, shape: $0.shape) } }
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("zero-sft-order-\(UUID().uuidString).safetensors")
        defer { try? FileManager.default.removeItem(at: url) }
        var asked: [String] = []
        try SafetensorsWriter.write(layout: tensors, to: url) { name, elements, destination in
            if elements.lowerBound == 0 { asked.append(name) }
            destination.update(repeating: 0)
        }
        #expect(asked == SafetensorsWriter.fileOrder(tensors).map(\.name))
        #expect(asked != tensors.map(\.name), "the layout order and the file order should differ for this test to mean anything")
    }
}
