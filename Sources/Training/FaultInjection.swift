import Foundation

/// A test hook, not a feature: `ZERO_SFT_FAULT=RANK:PHASE:STEP` makes rank RANK of `train` kill
/// itself with `SIGKILL` (`kill(getpid(), SIGKILL)`: no handler, no flush, as `kill -9` or the OOM
/// killer) at PHASE of optimizer step STEP (numbered from 1, as logged). What `launch/fault-matrix`
/// and `CheckpointFaultTests` use to check what a killed rank leaves on disk (docs/testing.md).
///
/// Phases, each checked in one place:
/// - `load`: after the model, the data and any checkpoint are loaded, before the first step this
///   process runs, when that step is STEP (1 for a fresh run) — ``Trainer/train(stopRequest:afterStep:)``;
/// - `forward`: before the forward pass of the step's first micro-batch (``Trainer/trainStep(_:stopRequest:)``);
/// - `backward`: between the first micro-batch's forward and its backward (``DecoderModel/beforeBackward``);
/// - `reduce`: before the step's gradient reduction (``ZeroEngine/reduceGradients()``);
/// - `optimizer`: before AdamW (``ZeroEngine/optimizerStep(learningRate:gradientScale:)``);
/// - `save`: inside the write of `checkpoint-STEP`'s shard file of this rank, after its header and
///   first role are written, before the file's rename and the completion marker (``CheckpointSaver/save(_:)``).
///
/// Parsed once per process before any rank starts work (``fromEnvironment(_:)``); a malformed value is
/// an ``OptionError`` naming the variable. Unset, every site costs one check of a nil optional.
public struct FaultInjection: Sendable, Equatable, CustomStringConvertible {
    public enum Phase: String, CaseIterable, Sendable {
        case load, forward, backward, reduce, optimizer, save
    }

    /// The environment variable read.
    public static let variable = "ZERO_SFT_FAULT"

    public var rank: Int
    public var phase: Phase
    public var step: Int

    public init(rank: Int, phase: Phase, step: Int) {
        self.rank = rank
        self.phase = phase
        self.step = step
    }

    /// Parses `RANK:PHASE:STEP` (RANK ≥ 0, STEP ≥ 1); throws an ``OptionError`` naming the variable.
    public init(parsing value: String) throws {
        let parts = value.split(separator: ":", omittingEmptySubsequences: false).map(String.init)
        let phases = Phase.allCases.map(\.rawValue).joined(separator: ", ")
        guard parts.count == 3, let rank = Int(parts[0]), rank >= 0, let phase = Phase(rawValue: parts[1]),
              let step = Int(parts[2]), step >= 1 else {
            throw OptionError(message: "\(Self.variable)=\(value): expected RANK:PHASE:STEP (a test hook: RANK ≥ 0, "
                + "PHASE one of \(phases), STEP ≥ 1), e.g. 1:save:4")
        }
        self.init(rank: rank, phase: phase, step: step)
    }

    /// The fault `environment` asks for; nil when the variable is unset.
    public static func fromEnvironment(_ environment: [String: String] = ProcessInfo.processInfo.environment) throws -> FaultInjection? {
        try environment[variable].map { try FaultInjection(parsing: $0) }
    }

    /// Whether this fault is due at `phase` of `step` on `rank`.
    public func isDue(_ phase: Phase, step: Int, rank: Int) -> Bool {
        phase == self.phase && step == self.step && rank == self.rank
    }

    /// Kills this process with `SIGKILL` when the fault is due (after a line on stderr saying so).
    public func trigger(_ phase: Phase, step: Int, rank: Int) {
        guard isDue(phase, step: step, rank: rank) else { return }
        killThisProcess()
    }

    /// Kills this process with `SIGKILL` now.
    public func killThisProcess() {
        FileHandle.standardError.write(Data("zero-sft: \(Self.variable): rank \(rank) kills itself (SIGKILL) at \(phase.rawValue) of step \(step)\n".utf8))
        _ = kill(getpid(), SIGKILL)
    }

    public var description: String { "\(rank):\(phase.rawValue):\(step)" }
}
