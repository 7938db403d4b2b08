/// The dtype in which parameters are all-gathered and enter the forward and backward
/// (`--param-dtype`): PyTorch FSDP's `MixedPrecisionPolicy.param_dtype`.
///
/// Master parameters, gradients, their reduce-scatters and AdamW's moments stay fp32 whatever this is.
/// - `fp32`: the model reads the master parameters (stages 0–2) or their fp32 all-gather (stage 3).
/// - `bf16`: every parameter the model reads is rounded to the nearest bf16 (ties to even,
///   ``Kernels/BFloat16/round(_:)``) — norm weights and the embedding table included, as FSDP's cast
///   does. At stage 3 each rank rounds its shard and the all-gather moves the 16-bit patterns (half the
///   bytes), widened to fp32 (exactly) when the unit is used; at stages 0–2 the model reads a rounded
///   copy of each unit, made when the unit is used and freed after. Gradients are taken with respect to
///   the rounded values and applied to the fp32 masters.
public enum ParameterDType: String, Sendable, CaseIterable, Codable {
    case fp32, bf16

    /// Bytes per parameter on the wire of a stage-3 all-gather and in a gathered unit before widening.
    public var wireBytes: Int { self == .bf16 ? 2 : 4 }
}
