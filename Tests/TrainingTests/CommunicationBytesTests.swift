import Foundation
import Models
import TestSupport
import Testing
import Training

/// Bytes sent per step per rank (``CommunicationCounters``, the ring model) against the ZeRO
/// paper's figures (Rajbhandari et al. 2020, section 7): 2Ψ·(N-1)/N·4 bytes at stages 0–2 and
/// 3Ψ·(N-1)/N·4 at stage 3, Ψ the parameter count. A deterministic figure, independent of load.
///
/// zero-sft's schedule (``DecoderModel/parameterSchedule(training:)``) differs from the paper's
/// "every parameter gathered in the forward and again in the backward" in three exact ways, with E
/// the embedding's and F the final unit's (norm, and the head when untied) elements:
/// - stage 3 does not gather the embedding in the backward (its gradient needs only the token
///   ids) nor the final unit (still gathered from the end of the forward): −E − F;
/// - a tied embedding is gathered a second time at the head in the forward (+E at stage 3) and its
///   gradient is reduce-scattered twice, after the head and after the lookup (+E at stages 2–3).
/// Every count uses units padded to a multiple of N. The only other traffic is the step's small
/// all-reduces: token counts and the two stop-request counts (4 × 8 bytes, the SIGTERM/SIGINT
/// agreement rides on it), loss 8, gradient norm 8: 48 bytes, 2 phases × (N-1)/N = 72 bytes at N = 4;
/// the tolerance is 64 bytes on top.
@Suite(.serialized) struct CommunicationBytesTests {
    static let ranks = 4

    static func bytesPerStep(model: String, stage: Int, in scratch: ScratchDirectory, data: URL, extra: [String] = []) throws -> [Int] {
        let run = try TrainingRun.run(
            ranks: ranks,
            arguments: ["--model", model, "--data", data.path, "--seq-len", "32", "--max-steps", "2", "--micro-batch-size", "1",
                        "--zero-stage", "\(stage)", "--seed", "3"] + extra,
            in: scratch.url, label: "\(model)-stage\(stage)\(extra.joined())", saveModel: false)
        return run.metrics.map { (($0["communication"] as? [String: Any])?["bytes_sent"] as? NSNumber)?.intValue ?? -1 }
    }

    /// A scratch directory holding the 16 synthetic examples every case trains on.
    static func dataset() throws -> (ScratchDirectory, URL) {
        let scratch = try ScratchDirectory()
        let data = scratch.url.appendingPathComponent("data.jsonl")
        try writeJSONL(syntheticExamples(count: 16, seed: 4), to: data)
        return (scratch, data)
    }

    /// Ψ, E and F in padded elements, and whether the embedding is tied.
    static func sizes(_ model: String) -> (psi: Int, embedding: Int, final: Int, tied: Bool) {
        let config = ModelPreset.config(named: model)!
        let layout = ParameterLayout(config: config)
        func padded(_ count: Int) -> Int { (count + ranks - 1) / ranks * ranks }
        return (layout.units.reduce(0) { $0 + padded($1.count) }, padded(layout.units[layout.embeddingUnit].count),
                padded(layout.units[layout.finalUnit].count), config.tieWordEmbeddings)
    }

    @Test("bytes per step: 2Ψ(N-1)/N·4 at stages 0-1, the paper's 2Ψ/3Ψ at stages 2-3 corrected by the schedule's E and F",
          arguments: ["tiny-qwen2", "tiny"])
    func bytesMatchThePaper(model: String) throws {
        let (scratch, data) = try Self.dataset()
        let (psi, e, f, tied) = Self.sizes(model)
        let n = Self.ranks
        for stage in 0...3 {
            let paperElements = (stage == 3 ? 3 : 2) * psi
            var elements = paperElements
            if stage >= 2 && tied { elements += e }       // the tied embedding's second reduce-scatter
            if stage == 3 { elements += (tied ? e : 0) - e - f }  // second forward gather if tied; no backward gather of E and F
            let small = 2 * 48 * (n - 1) / n  // the step's all-reduces of counts, loss and norm
            let expected = elements * 4 * (n - 1) / n + small
            let paper = Double(paperElements * 4 * (n - 1) / n)
            let measured = try Self.bytesPerStep(model: model, stage: stage, in: scratch, data: data)
            #expect(measured.count == 2, "\(model) stage \(stage): \(measured)")
            for bytes in measured {
                #expect(abs(bytes - expected) <= 64,
                        "\(model) stage \(stage): \(bytes) bytes per step, expected \(expected) (paper \(Int(paper)), ratio \(Double(bytes) / paper))")
            }
            if stage <= 1 {
                #expect(measured.allSatisfy { $0 - small == Int(paper) }, "stage \(stage) is exactly the paper's 2Ψ: \(measured) − \(small) vs \(Int(paper))")
            }
        }
    }

    /// `--param-dtype bf16`: stage 3's all-gathers move 2 bytes per parameter (the same schedule as
    /// above), its gradient reduce-scatters still 4; stages 0–2 send exactly what they send in fp32.
    @Test("--param-dtype bf16: stage 3 gathers 2 bytes per parameter, reduce-scatters 4", arguments: ["tiny-qwen2", "tiny"])
    func bf16ParametersHalveTheGathers(model: String) throws {
        let (scratch, data) = try Self.dataset()
        let (psi, e, f, tied) = Self.sizes(model)
        let n = Self.ranks
        let gathered = 2 * psi + (tied ? e : 0) - e - f, reduced = psi + (tied ? e : 0)
        let small = 2 * 48 * (n - 1) / n
        let expected = gathered * 2 * (n - 1) / n + reduced * 4 * (n - 1) / n + small
        let fp32 = (gathered + reduced) * 4 * (n - 1) / n + small
        let measured = try Self.bytesPerStep(model: model, stage: 3, in: scratch, data: data, extra: ["--param-dtype", "bf16"])
        #expect(measured.count == 2 && measured.allSatisfy { abs($0 - expected) <= 64 },
                "\(model) stage 3 bf16: \(measured) bytes per step, expected \(expected) (fp32: \(fp32))")
        let stage2 = try Self.bytesPerStep(model: model, stage: 2, in: scratch, data: data, extra: ["--param-dtype", "bf16"])
        let expected2 = (2 * psi + (tied ? e : 0)) * 4 * (n - 1) / n + small
        #expect(stage2.count == 2 && stage2.allSatisfy { abs($0 - expected2) <= 64 }, "\(model) stage 2 bf16: \(stage2), expected \(expected2)")
    }
}
