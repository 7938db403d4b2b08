import Foundation

/// Linear warm-up then cosine decay to `minimum`, as HF's `get_cosine_schedule_with_warmup`
/// (step counted from 0: the first update uses `peak × 0 / warmup` when there is a warm-up).
public struct LearningRateSchedule: Sendable, Codable, Equatable {
    public var peak: Double
    public var warmupSteps: Int
    public var totalSteps: Int
    public var minimum: Double

    public init(peak: Double, warmupSteps: Int, totalSteps: Int, minimum: Double = 0) {
        self.peak = peak
        self.warmupSteps = warmupSteps
        self.totalSteps = totalSteps
        self.minimum = minimum
    }

    public func rate(at step: Int) -> Double {
        if step < warmupSteps { return peak * Double(step) / Double(max(1, warmupSteps)) }
        let progress = Double(step - warmupSteps) / Double(max(1, totalSteps - warmupSteps))
        return minimum + (peak - minimum) * 0.5 * (1 + cos(Double.pi * min(1, progress)))
    }
}
