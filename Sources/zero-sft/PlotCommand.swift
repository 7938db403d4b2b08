import ArgumentParser
import Checkpoints
import Foundation
import Training

struct PlotCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "plot",
        abstract: "Draw a metrics file (train --metrics-file) as an SVG: loss with each eval set, learning rate, gradient norm, tokens/s.",
        discussion: "Hand-written SVG, readable in any browser; no Python needed. Lines other than step and eval lines are ignored.")

    @Argument(help: ArgumentHelp("The JSONL metrics file train --metrics-file wrote.", valueName: "metrics.jsonl"))
    var metrics: String
    @Option(name: .long, help: ArgumentHelp("The SVG file to write (overwritten).", valueName: "run.svg"))
    var out: String
    @Option(name: .long, help: "The figure's title (default: the metrics file's name).")
    var title: String?

    func run() throws {
        let log = try MetricsLog.read(path: metrics)
        let svg = MetricsPlot.svg(log, title: title ?? "zero-sft: \(URL(fileURLWithPath: metrics).lastPathComponent)")
        guard FileManager.default.createFile(atPath: out, contents: Data(svg.utf8)) else {
            let code = errno
            throw FileOperationError(path: out, operation: "write the plot", reason: "\(String(cString: strerror(code))) (errno \(code))")
        }
        print("wrote \(out): \(log.trainLoss.count) step lines, \(log.evalLoss.count) eval set\(log.evalLoss.count == 1 ? "" : "s") (\(svg.utf8.count) bytes)")
    }
}
