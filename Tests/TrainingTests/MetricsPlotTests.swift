import Foundation
import TestSupport
import Testing
@testable import Training

#if canImport(FoundationXML)
import FoundationXML
#endif

/// `zero-sft plot`: the metrics file read back, the SVG well-formed with one polyline per series.
@Suite(.serialized) struct MetricsPlotTests {
    /// 12 step lines, evaluations of `val` and `general` at steps 0, 6, 12, and a line of another kind.
    static let synthetic: String = {
        var lines: [String] = []
        for step in 0...12 {
            if step % 6 == 0 {
                let val = 2.5 - 0.05 * Double(step), general = 3.0 + 0.01 * Double(step)
                lines.append("{\"eval\":{\"general\":{\"delta_from_step_0\":\(general - 3),\"loss\":\(general),\"supervised_tokens\":900},"
                    + "\"val\":{\"delta_from_step_0\":\(val - 2.5),\"loss\":\(val),\"supervised_tokens\":400}},\"seconds\":0.5,\"step\":\(step)}")
            }
            if step > 0 {
                lines.append("{\"grad_norm\":\(1.0 / Double(step)),\"loss\":\(2.6 - 0.04 * Double(step)),\"lr\":\(2e-5 * (1 - Double(step) / 13)),"
                    + "\"step\":\(step),\"supervised_tokens\":500,\"tokens\":2000,\"tokens_per_sec\":\(41000 + 100 * step)}")
            }
        }
        lines.insert("{\"note\":\"a line of another kind\"}", at: 3)
        return lines.joined(separator: "\n") + "\n"
    }()

    @Test("a synthetic metrics file: the series read back, the SVG parses as XML with one polyline per series of the right length")
    func svgOfSyntheticMetrics() throws {
        let log = try MetricsLog.parse(Array(Self.synthetic.utf8), path: "synthetic.jsonl")
        #expect(log.trainLoss.count == 12 && log.learningRate.count == 12 && log.gradientNorm.count == 12 && log.tokensPerSecond.count == 12)
        #expect(log.evalLoss.map(\.name) == ["general", "val"])
        #expect(log.evalLoss.map { $0.points.map(\.step) } == [[0, 6, 12], [0, 6, 12]])
        #expect(log.trainLoss.first == MetricsLog.Point(step: 1, value: 2.56))
        let svg = MetricsPlot.svg(log, title: "run <1> & co")
        let expected = ["train loss": 12, "eval general": 3, "eval val": 3, "lr": 12, "grad norm": 12, "tokens/s": 12]
        #if canImport(FoundationXML)
        let document = try XMLDocument(xmlString: svg, options: [])
        #expect(document.rootElement()?.name == "svg")
        let polylines = try document.nodes(forXPath: "//*[local-name()='polyline']").compactMap { $0 as? XMLElement }
        var found: [String: Int] = [:]
        for line in polylines {
            // swift-corelibs-foundation's `attribute(forName:)` finds nothing in a namespaced document: search the list.
            func attribute(_ key: String) -> String? { line.attributes?.first { $0.name == key }?.stringValue }
            guard let name = attribute("data-series"), let points = attribute("points") else {
                Issue.record("a polyline without data-series or points")
                continue
            }
            let pairs = points.split(separator: " ")
            #expect(pairs.allSatisfy { $0.split(separator: ",").count == 2 && $0.split(separator: ",").allSatisfy { Double($0) != nil } },
                    "\(name): points \(points.prefix(80))")
            found[name] = pairs.count
        }
        #expect(found == expected)
        let title = try document.nodes(forXPath: "//*[local-name()='text']").first?.stringValue
        #expect(title == "run <1> & co")
        #else
        // Structural check: one root, balanced polylines.
        #expect(svg.contains("<svg ") && svg.hasSuffix("</svg>\n"))
        for (name, count) in expected {
            let marker = "data-series=\"\(name)\""
            guard let range = svg.range(of: marker), let points = svg[range.upperBound...].range(of: "points=\"") else {
                Issue.record("no polyline \(name)")
                continue
            }
            let value = svg[points.upperBound...].prefix { $0 != "\"" }
            #expect(value.split(separator: " ").count == count, "\(name)")
        }
        #endif
    }

    @Test("nice axes: ticks at 1, 2 or 5 × 10^k that cover the data, labels with the decimals the step needs")
    func niceAxes() {
        let loss = MetricsPlot.Axis(lower: 0.13, upper: 4.7)
        #expect(loss.ticks == [0, 1, 2, 3, 4, 5])
        #expect(loss.label(2) == "2")
        let small = MetricsPlot.Axis(lower: 2.31, upper: 2.58)
        #expect(abs(small.step - 0.05) < 1e-15 && abs(small.lower - 2.3) < 1e-12 && abs(small.upper - 2.6) < 1e-12)
        #expect(small.label(2.35) == "2.35")
        let rate = MetricsPlot.Axis(lower: 0, upper: 2e-5)
        #expect(abs(rate.step - 5e-6) < 1e-18 && rate.label(1e-5) == "1.0e-05")
        let flat = MetricsPlot.Axis(lower: 3, upper: 3)
        #expect(flat.lower < 3 && flat.upper > 3)
    }

    @Test("bad metrics files are refused naming the file and line")
    func badFiles() {
        func error(_ text: String) -> MetricsFileError? {
            do { _ = try MetricsLog.parse(Array(text.utf8), path: "m.jsonl"); return nil } catch { return error }
        }
        #expect(error("{\"step\":1,\"loss\":2}\nnot json\n")?.line == 2)
        #expect(error("{\"step\":1,\"loss\":2}\n[1, 2]\n")?.description.hasPrefix("m.jsonl:2: expected a JSON object") == true)
        #expect(error("{\"step\":\"one\",\"loss\":2}\n")?.description == "m.jsonl:1: \"step\" must be a number")
        #expect(error("{\"step\":1,\"eval\":{\"val\":{\"loss\":null}}}\n")?.line == 1)
        #expect(error("{\"note\":1}\n")?.description.contains("no step lines") == true)
        #expect(error("")?.description.contains("no step lines") == true)
    }

    @Test("zero-sft plot writes the SVG; a missing file or an unwritable --out is a clear error")
    func command() throws {
        let scratch = try ScratchDirectory()
        let metrics = scratch.url.appendingPathComponent("run.jsonl"), svg = scratch.url.appendingPathComponent("run.svg")
        try Self.synthetic.write(to: metrics, atomically: true, encoding: .utf8)
        let ok = try MPIRun.run(ranks: MPIRun.withoutLauncher, arguments: ["plot", metrics.path, "--out", svg.path], timeout: 60)
        #expect(ok.status == 0, "\(ok.stderr)")
        #expect(ok.stdout.contains("wrote \(svg.path): 12 step lines, 2 eval sets"), "\(ok.stdout)")
        let written = try String(contentsOf: svg, encoding: .utf8)
        #expect(written.contains("zero-sft: run.jsonl"))
        let missing = scratch.url.appendingPathComponent("missing.jsonl").path
        let absent = try MPIRun.run(ranks: MPIRun.withoutLauncher, arguments: ["plot", missing, "--out", svg.path], timeout: 60)
        #expect(absent.status != 0 && absent.stderr.contains(missing), "\(absent.stderr)")
        let badOut = scratch.url.appendingPathComponent("no-such-dir/run.svg").path
        let unwritable = try MPIRun.run(ranks: MPIRun.withoutLauncher, arguments: ["plot", metrics.path, "--out", badOut], timeout: 60)
        #expect(unwritable.status != 0 && unwritable.stderr.contains(badOut), "\(unwritable.stderr)")
        let garbage = scratch.url.appendingPathComponent("garbage.jsonl")
        try "{\"step\":1,\"loss\":2}\n{oops\n".write(to: garbage, atomically: true, encoding: .utf8)
        let bad = try MPIRun.run(ranks: MPIRun.withoutLauncher, arguments: ["plot", garbage.path, "--out", svg.path], timeout: 60)
        #expect(bad.status != 0 && bad.stderr.contains("\(garbage.path):2: not JSON"), "\(bad.stderr)")
    }
}
