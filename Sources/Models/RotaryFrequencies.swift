import Foundation
import Kernels

extension ModelConfig {
    /// The RoPE inverse frequencies `θᵢ` (`d/2` of them) and the factor `m` on cos/sin, as transformers 5
    /// computes them (`modeling_rope_utils.ROPE_INIT_FUNCTIONS`), step by step in float32 like torch.
    ///
    /// - default: `θᵢ = 1 / base^(2i/d)`;
    /// - `linear`: `θᵢ / factor`;
    /// - `dynamic` (NTK): with `L = max(sequenceLength, max_position_embeddings)`,
    ///   `base' = base · (factor·L/max_position_embeddings − (factor − 1))^(d/(d−2))`, then the default formula.
    ///   transformers computes it from `max(position_ids) + 1` of each forward (``rotaryDependsOnLength``);
    ///   with `sequenceLength` nil (or ≤ `max_position_embeddings`) it is the default;
    /// - `yarn`: a linear ramp over `i` between `θᵢ / factor` and `θᵢ`, with bounds from `beta_fast`/`beta_slow`
    ///   rotations over `original_max_position_embeddings` (floored/ceiled unless `truncate` is false), and
    ///   `m = attention_factor`, else `0.1·ln(factor) + 1` (or the `mscale`/`mscale_all_dim` ratio);
    /// - `llama3`: wavelengths `2π/θᵢ` above `original/low_freq_factor` are divided by `factor`, those below
    ///   `original/high_freq_factor` kept, and the ones between interpolated with
    ///   `s = (original/λ − low)/(high − low)`: `(1 − s)·θ/factor + s·θ`.
    public func rotaryFrequencies(sequenceLength: Int? = nil) -> (inverse: [Float], attentionFactor: Float) {
        let d = headDimension, half = d / 2
        let base = ropeTheta
        let standard = RotaryTable.defaultInverseFrequencies(headDimension: d, base: base)
        guard let scaling = ropeScaling else { return (standard, 1) }
        switch scaling.type {
        case .linear:
            let factor = Float(scaling.factor ?? 1)
            return (standard.map { $0 / factor }, 1)
        case .dynamic:
            guard let length = sequenceLength, length > maxPositionEmbeddings else { return (standard, 1) }
            // torch: seq_len is an int64 tensor, so the new base is computed in float32.
            let factor = scaling.factor ?? 1
            let ratio = Float(factor) * Float(length) / Float(maxPositionEmbeddings) - Float(factor - 1)
            let scaled = Float(base) * powf(ratio, Float(Double(d) / Double(d - 2)))
            return ((0..<half).map { 1 / powf(scaled, Float(2 * $0) / Float(d)) }, 1)
        case .llama3:
            let factor = Float(scaling.factor ?? 1)
            let low = scaling.lowFreqFactor ?? 1, high = scaling.highFreqFactor ?? 4
            let original = Double(scaling.originalMaxPositionEmbeddings ?? maxPositionEmbeddings)
            let lowWavelength = Float(original / low), highWavelength = Float(original / high)
            let inverse = standard.map { theta -> Float in
                let wavelength = Float(2 * Double.pi) / theta
                if wavelength < highWavelength { return theta }
                if wavelength > lowWavelength { return theta / factor }
                let smooth = (Float(original) / wavelength - Float(low)) / Float(high - low)
                return (1 - smooth) * theta / factor + smooth * theta
            }
            return (inverse, 1)
        case .yarn:
            let original = Double(scaling.originalMaxPositionEmbeddings ?? maxPositionEmbeddings)
            let factor = scaling.factor ?? Double(maxPositionEmbeddings) / original
            func mscale(_ scale: Double, _ m: Double = 1) -> Double { scale <= 1 ? 1 : 0.1 * m * log(scale) + 1 }
            let attention: Double
            if let given = scaling.attentionFactor {
                attention = given
            } else if let m = scaling.mscale, let all = scaling.mscaleAllDim, m != 0, all != 0 {
                attention = mscale(factor, m) / mscale(factor, all)
            } else {
                attention = mscale(factor)
            }
            let betaFast = scaling.betaFast.flatMap { $0 == 0 ? nil : $0 } ?? 32
            let betaSlow = scaling.betaSlow.flatMap { $0 == 0 ? nil : $0 } ?? 1
            func correctionDimension(_ rotations: Double) -> Double {
                Double(d) * log(original / (rotations * 2 * Double.pi)) / (2 * log(base))
            }
            var low = correctionDimension(betaFast), high = correctionDimension(betaSlow)
            if scaling.truncate ?? true {
                low = low.rounded(.down)
                high = high.rounded(.up)
            }
            low = max(low, 0)
            high = min(high, Double(d - 1))
            if low == high { high += 0.001 }
            // float32 as torch: pos_freqs = base ** (arange(0, d, 2) / d); ramp = clamp((arange(d/2) − low) / (high − low), 0, 1).
            let lowF = Float(low), spanF = Float(high - low), factorF = Float(factor)
            let inverse = (0..<half).map { i -> Float in
                let positionFrequency = powf(Float(base), Float(2 * i) / Float(d))
                let extrapolation = 1 / positionFrequency, interpolation = 1 / (factorF * positionFrequency)
                let ramp = min(max((Float(i) - lowF) / spanF, 0), 1)
                let extrapolationFactor = 1 - ramp
                return interpolation * (1 - extrapolationFactor) + extrapolation * extrapolationFactor
            }
            return (inverse, Float(attention))
        }
    }

    /// Whether the frequencies depend on the sequence length (`dynamic`): the model rebuilds its table
    /// for each batch's longest example, and the generator for each append.
    public var rotaryDependsOnLength: Bool { ropeScaling?.type == .dynamic }

    /// The rotary table for positions `0 ..< positions`, scaled for `sequenceLength` tokens (`dynamic` only).
    public func rotaryTable(positions: Int, sequenceLength: Int? = nil) -> RotaryTable {
        let (inverse, factor) = rotaryFrequencies(sequenceLength: sequenceLength)
        return RotaryTable(inverseFrequencies: inverse, attentionFactor: factor, maxPositions: positions)
    }
}
