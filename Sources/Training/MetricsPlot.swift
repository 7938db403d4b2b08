import Checkpoints
import Foundation

/// A metrics file that cannot be plotted, naming the file and (when it is one line's fault) the line.
public struct MetricsFileError: Error, CustomStringConvertible, Equatable {
    public var path: String
    public var line: Int?
    public var message: String
    public var description: String { line.map { "\(path):\($0): \(message)" } ?? "\(path): \(message)" }
}

/// The series of a `train --metrics-file` (docs/formats.md): step lines (`{"step", "loss", "lr",
/// "grad_norm", "tokens_per_sec", …}`) and evaluation lines (`{"step", "eval": {NAME: {"loss", …}}}`).
/// Other objects with a `step` (or without one) are ignored, so later line kinds do not break plotting.
public struct MetricsLog: Sendable, Equatable {
    /// One series: (step, value) in file order.
    public typealias Points = [Point]
    public struct Point: Sendable, Equatable {
        public var step: Double
        public var value: Double
    }

    public var trainLoss: Points = []
    public var learningRate: Points = []
    public var gradientNorm: Points = []
    public var tokensPerSecond: Points = []
    /// Each eval set's loss, in the order the sets first appear (sorted by name within a line).
    public var evalLoss: [(name: String, points: Points)] = []
    /// Lines with a numeric `step`.
    public var stepLines = 0

    public init() {}

    public static func == (a: MetricsLog, b: MetricsLog) -> Bool {
        a.trainLoss == b.trainLoss && a.learningRate == b.learningRate && a.gradientNorm == b.gradientNorm
            && a.tokensPerSecond == b.tokensPerSecond && a.stepLines == b.stepLines
            && a.evalLoss.map(\.name) == b.evalLoss.map(\.name) && a.evalLoss.map(\.points) == b.evalLoss.map(\.points)
    }

    /// Reads and parses the metrics file at `path`.
    public static func read(path: String) throws(MetricsFileError) -> MetricsLog {
        let bytes: [UInt8]
        do { bytes = try FileContents.read(path) } catch {
            throw MetricsFileError(path: path, line: nil, message: "cannot read: \(error.operation) failed: \(error.reason)")
        }
        return try parse(bytes, path: path)
    }

    /// Parses JSONL metrics; `path` names the source in errors.
    /// - Throws: ``MetricsFileError`` for a line that is not a JSON object, a non-numeric `step` or loss,
    ///   or a file without any step line.
    public static func parse(_ bytes: [UInt8], path: String) throws(MetricsFileError) -> MetricsLog {
        var log = MetricsLog()
        var lineNumber = 0
        for line in bytes.split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: false) {
            lineNumber += 1
            if line.allSatisfy({ $0 == 0x20 || $0 == 0x0D || $0 == 0x09 }) { continue }
            func fail(_ message: String) -> MetricsFileError { MetricsFileError(path: path, line: lineNumber, message: message) }
            let object: Any
            do { object = try JSONSerialization.jsonObject(with: Data(line), options: [.fragmentsAllowed]) } catch {
                throw fail("not JSON (expected one metrics object per line, as train --metrics-file writes)")
            }
            guard let record = object as? [String: Any] else { throw fail("expected a JSON object, found \(type(of: object))") }
            guard let stepValue = record["step"] else { continue }
            guard let step = number(stepValue) else { throw fail("\"step\" must be a number") }
            log.stepLines += 1
            if let eval = record["eval"] {
                guard let sets = eval as? [String: Any] else { throw fail("\"eval\" must be an object of sets") }
                for name in sets.keys.sorted() {
                    guard let set = sets[name] as? [String: Any], let loss = set["loss"].flatMap(number) else {
                        throw fail("eval set \"\(name)\" must be an object with a numeric \"loss\"")
                    }
                    if let index = log.evalLoss.firstIndex(where: { $0.name == name }) {
                        log.evalLoss[index].points.append(Point(step: step, value: loss))
                    } else {
                        log.evalLoss.append((name, [Point(step: step, value: loss)]))
                    }
                }
            } else if let lossValue = record["loss"] {
                guard let loss = number(lossValue) else { throw fail("\"loss\" must be a number") }
                log.trainLoss.append(Point(step: step, value: loss))
                if let lr = record["lr"].flatMap(number) { log.learningRate.append(Point(step: step, value: lr)) }
                if let norm = record["grad_norm"].flatMap(number) { log.gradientNorm.append(Point(step: step, value: norm)) }
                if let rate = record["tokens_per_sec"].flatMap(number) { log.tokensPerSecond.append(Point(step: step, value: rate)) }
            }
        }
        guard log.stepLines > 0 else {
            throw MetricsFileError(path: path, line: nil,
                                   message: "no step lines: expected JSON objects with \"step\" (train --metrics-file), found \(lineNumber == 0 ? "an empty file" : "none")")
        }
        return log
    }

    /// A finite JSON number (Foundation gives `NSNumber`; a string or `null` is not one).
    static func number(_ value: Any) -> Double? {
        guard let number = value as? NSNumber else { return nil }
        let double = number.doubleValue
        return double.isFinite ? double : nil
    }
}

/// Loss curves as a hand-written SVG: four panels against the optimizer step (loss with every eval set,
/// learning rate, gradient norm, tokens/s), each with nicely numbered axes; one `<polyline>` per series.
public enum MetricsPlot {
    public struct Series {
        public var name: String
        public var color: String
        public var points: MetricsLog.Points
        /// Markers on each point (eval series have few).
        public var markers: Bool
    }

    static let palette = ["#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22"]

    /// The SVG document of `log` under `title`.
    public static func svg(_ log: MetricsLog, title: String) -> String {
        let panelWidth = 460.0, panelHeight = 270.0, top = 56.0, gap = 20.0
        let width = 2 * panelWidth + 3 * gap, height = top + 2 * panelHeight + 2 * gap
        var loss = [Series(name: "train loss", color: "#1f77b4", points: log.trainLoss, markers: false)]
        for (index, set) in log.evalLoss.enumerated() {
            loss.append(Series(name: "eval \(set.name)", color: palette[index % palette.count], points: set.points, markers: true))
        }
        let allSteps = (log.trainLoss + log.learningRate + log.evalLoss.flatMap(\.points)).map(\.step)
        let stepAxis = Axis(lower: allSteps.min() ?? 0, upper: allSteps.max() ?? 1)
        let panels: [(String, [Series])] = [
            ("loss (nats per supervised token)", loss),
            ("learning rate", [Series(name: "lr", color: "#555555", points: log.learningRate, markers: false)]),
            ("gradient norm (before clipping)", [Series(name: "grad norm", color: "#17becf", points: log.gradientNorm, markers: false)]),
            ("tokens per second", [Series(name: "tokens/s", color: "#8c564b", points: log.tokensPerSecond, markers: false)]),
        ]
        var svg = """
            <?xml version="1.0" encoding="UTF-8"?>
            <svg xmlns="http://www.w3.org/2000/svg" width="\(format(width))" height="\(format(height))" viewBox="0 0 \(format(width)) \(format(height))" font-family="sans-serif" font-size="11">
            <rect width="100%" height="100%" fill="white"/>
            <text x="\(format(width / 2))" y="24" text-anchor="middle" font-size="16" font-weight="bold">\(escape(title))</text>
            <text x="\(format(width / 2))" y="42" text-anchor="middle" fill="#555">\(log.trainLoss.count) logged steps, \(log.evalLoss.count) eval set\(log.evalLoss.count == 1 ? "" : "s")</text>

            """
        for (index, (name, series)) in panels.enumerated() {
            let x = gap + Double(index % 2) * (panelWidth + gap), y = top + Double(index / 2) * (panelHeight + gap)
            svg += panel(name, series: series, stepAxis: stepAxis, x: x, y: y, width: panelWidth, height: panelHeight)
        }
        return svg + "</svg>\n"
    }

    /// One panel: frame, ticks and labels, the series' polylines and (for more than one series) a legend.
    static func panel(_ title: String, series: [Series], stepAxis: Axis, x: Double, y: Double, width: Double, height: Double) -> String {
        let left = x + 62, right = x + width - 10, top = y + 24, bottom = y + height - 34
        var out = "<g class=\"panel\">\n"
        out += "<text x=\"\(format((left + right) / 2))\" y=\"\(format(y + 14))\" text-anchor=\"middle\" font-weight=\"bold\">\(escape(title))</text>\n"
        out += "<rect x=\"\(format(left))\" y=\"\(format(top))\" width=\"\(format(right - left))\" height=\"\(format(bottom - top))\" fill=\"none\" stroke=\"#999\"/>\n"
        let values = series.flatMap(\.points).map(\.value)
        guard !values.isEmpty else {
            return out + "<text x=\"\(format((left + right) / 2))\" y=\"\(format((top + bottom) / 2))\" text-anchor=\"middle\" fill=\"#999\">no data</text>\n</g>\n"
        }
        let valueAxis = Axis(lower: values.min()!, upper: values.max()!)
        func px(_ step: Double) -> Double { left + (step - stepAxis.lower) / (stepAxis.upper - stepAxis.lower) * (right - left) }
        func py(_ value: Double) -> Double { bottom - (value - valueAxis.lower) / (valueAxis.upper - valueAxis.lower) * (bottom - top) }
        for tick in stepAxis.ticks {
            let tx = format(px(tick))
            out += "<line x1=\"\(tx)\" y1=\"\(format(top))\" x2=\"\(tx)\" y2=\"\(format(bottom))\" stroke=\"#eee\"/>"
            out += "<text x=\"\(tx)\" y=\"\(format(bottom + 14))\" text-anchor=\"middle\">\(stepAxis.label(tick))</text>\n"
        }
        for tick in valueAxis.ticks {
            let ty = format(py(tick))
            out += "<line x1=\"\(format(left))\" y1=\"\(ty)\" x2=\"\(format(right))\" y2=\"\(ty)\" stroke=\"#eee\"/>"
            out += "<text x=\"\(format(left - 4))\" y=\"\(format(py(tick) + 4))\" text-anchor=\"end\">\(valueAxis.label(tick))</text>\n"
        }
        out += "<text x=\"\(format((left + right) / 2))\" y=\"\(format(bottom + 28))\" text-anchor=\"middle\" fill=\"#555\">step</text>\n"
        for line in series where !line.points.isEmpty {
            let points = line.points.map { "\(format(px($0.step))),\(format(py($0.value)))" }.joined(separator: " ")
            out += "<polyline class=\"series\" data-series=\"\(escape(line.name))\" fill=\"none\" stroke=\"\(line.color)\" stroke-width=\"1.5\" points=\"\(points)\"/>\n"
            if line.markers {
                for point in line.points {
                    out += "<circle cx=\"\(format(px(point.step)))\" cy=\"\(format(py(point.value)))\" r=\"2.5\" fill=\"\(line.color)\"/>"
                }
                out += "\n"
            }
        }
        if series.count > 1 {
            out += "<rect x=\"\(format(right - 136))\" y=\"\(format(top + 2))\" width=\"132\" height=\"\(format(Double(series.count) * 14 + 4))\" "
                + "fill=\"white\" fill-opacity=\"0.85\" stroke=\"#ddd\"/>\n"
            for (index, line) in series.enumerated() {
                let ly = top + 12 + Double(index) * 14
                out += "<line x1=\"\(format(right - 130))\" y1=\"\(format(ly - 4))\" x2=\"\(format(right - 112))\" y2=\"\(format(ly - 4))\" stroke=\"\(line.color)\" stroke-width=\"2\"/>"
                out += "<text x=\"\(format(right - 108))\" y=\"\(format(ly))\">\(escape(line.name))</text>\n"
            }
        }
        return out + "</g>\n"
    }

    /// An axis over [lower, upper] widened to nice tick values (Heckbert, "Nice numbers for graph labels",
    /// Graphics Gems, 1990): about five ticks at 1, 2 or 5 × 10^k.
    struct Axis {
        var lower: Double
        var upper: Double
        var step: Double

        init(lower: Double, upper: Double, ticks: Int = 5) {
            var low = lower, high = upper
            if high <= low {
                let pad = low == 0 ? 1 : abs(low) * 0.1
                low -= pad
                high += pad
            }
            let step = Self.nice((high - low) / Double(ticks - 1), round: true)
            self.step = step
            self.lower = (low / step).rounded(.down) * step
            self.upper = (high / step).rounded(.up) * step
        }

        /// The nice number near `value`: 1, 2, 5 or 10 × 10^k (rounded, or the next one up).
        static func nice(_ value: Double, round: Bool) -> Double {
            let exponent = (log10(value)).rounded(.down), fraction = value / pow(10, exponent)
            let niceFraction: Double
            if round { niceFraction = fraction < 1.5 ? 1 : fraction < 3 ? 2 : fraction < 7 ? 5 : 10 }
            else { niceFraction = fraction <= 1 ? 1 : fraction <= 2 ? 2 : fraction <= 5 ? 5 : 10 }
            return niceFraction * pow(10, exponent)
        }

        var ticks: [Double] {
            let count = Int(((upper - lower) / step).rounded())
            return (0...count).map { lower + Double($0) * step }
        }

        /// A tick label with as many decimals as the step needs; scientific for tiny or huge values.
        func label(_ value: Double) -> String {
            if abs(value) < step / 2 { return "0" }
            let magnitude = max(abs(lower), abs(upper))
            if step < 1e-3 || magnitude >= 1e6 { return String(format: "%.1e", value) }
            let decimals = max(0, Int(-log10(step).rounded(.down)))
            return String(format: "%.\(decimals)f", value)
        }
    }

    static func format(_ value: Double) -> String { String(format: "%.1f", value) }

    static func escape(_ text: String) -> String {
        var out = ""
        for character in text {
            switch character {
            case "&": out += "&amp;"
            case "<": out += "&lt;"
            case ">": out += "&gt;"
            case "\"": out += "&quot;"
            default: out.append(character)
            }
        }
        return out
    }
}
