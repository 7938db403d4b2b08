import Foundation
import TestSupport
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// Training across two namespace hosts of a `launch/cluster` cluster equals training on one host,
/// rank for rank (the same 4 ranks; TCP instead of shared memory between ranks 0–1 and 2–3).
@Suite(
    .serialized,
    .enabled(if: LocalCluster.isAvailable,
             "skipped: network namespaces cannot be created here (launch/cluster needs root and `ip netns add`)"))
struct ClusterTrainingTests {
    @Test("train on 2 hosts × 2 ranks equals 1 host × 4 ranks at stages 0 and 3; the log names each rank's host")
    func twoHostsMatchOneHost() throws {
        let scratch = try ScratchDirectory()
        let data = scratch.url.appendingPathComponent("data.jsonl")
        try writeJSONL(syntheticExamples(count: 160, seed: 9), to: data)
        let common = ["--model", "tiny", "--seq-len", "64", "--max-steps", "6", "--lr", "1e-3", "--warmup-steps", "2",
                      "--weight-decay", "0.1", "--clip-grad-norm", "1.0", "--seed", "5",
                      "--data", data.path, "--micro-batch-size", "1", "--grad-accum", "2"]
        try LocalCluster.withCluster(hosts: 2, name: "zctt", subnet: "10.213.252") { cluster in
            for stage in [0, 3] {
                let arguments = common + ["--zero-stage", "\(stage)"]
                let local = try TrainingRun.run(ranks: 4, arguments: arguments, in: scratch.url, label: "local-stage\(stage)")
                let spread = try TrainingRun.run(ranks: 4, arguments: arguments, in: scratch.url, label: "cluster-stage\(stage)",
                                                 launcherArguments: cluster.mpirunArguments)
                #expect(spread.losses.count == 6)
                EquivalenceTests().compare(spread, local, label: "2 hosts × 2 ranks, stage \(stage)")
                #expect(spread.stdout.contains("ranks: zctt-h1 [ranks 0,1]; zctt-h2 [ranks 2,3]"),
                        "no ranks: line with the hosts:\n\(spread.stdout.prefix(800))")
                #expect(spread.stdout.contains("memory rank 3 (zctt-h2): "), "the memory lines do not name the hosts:\n\(spread.stdout.prefix(800))")
            }
        }
    }
}

/// A stalled rank (SIGSTOP, as a user would try it) ends the job within the collective timeout.
@Suite(.serialized) struct CollectiveTimeoutTests {
    /// The pid of the `zero-sft` rank `rank` whose command line contains `marker`.
    static func rankProcess(_ rank: Int, marker: String) -> pid_t? {
        for entry in (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? [] {
            guard let pid = pid_t(entry),
                let commandLine = FileManager.default.contents(atPath: "/proc/\(entry)/cmdline"),
                String(decoding: commandLine, as: UTF8.self).contains(marker),
                String(decoding: commandLine.prefix { $0 != 0 }, as: UTF8.self).hasSuffix("zero-sft"),
                let environment = FileManager.default.contents(atPath: "/proc/\(entry)/environ")
            else { continue }
            let variables = environment.split(separator: 0).map { String(decoding: $0, as: UTF8.self) }
            if variables.contains("OMPI_COMM_WORLD_RANK=\(rank)") { return pid }
        }
        return nil
    }

    /// User plus system CPU seconds of `pid` (`/proc/PID/stat` fields 14 and 15).
    static func cpuSeconds(_ pid: pid_t) -> Double? {
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8), let close = stat.lastIndex(of: ")")
        else { return nil }
        let fields = stat[stat.index(after: close)...].split(separator: " ")
        guard fields.count > 13, let user = Double(fields[11]), let system = Double(fields[12]) else { return nil }
        return (user + system) / Double(sysconf(Int32(_SC_CLK_TCK)))
    }

    final class Observation: @unchecked Sendable {
        let lock = NSLock()
        var stoppedAt: ContinuousClock.Instant?
        var stoppedPid: pid_t?
        var waitingCPU: Double?
        var problem: String?
    }

    /// Stage 3 waits in `poll` (all-gathers, rings, small all-reduces: backoff); stage 0 in the blocking
    /// gradient `MPI_Allreduce` under the guard thread (no backoff: its CPU is not checked).
    @Test("SIGSTOP of rank 1 mid-run: the job ends within 15 s, naming the collective, the step and the rank; rank 0 backs off",
          arguments: [(3, false), (0, false), (3, true)])
    func stoppedRankEndsTheJob(stage: Int, progressThread: Bool) throws {
        let scratch = try ScratchDirectory()
        let data = scratch.url.appendingPathComponent("data.jsonl")
        try writeJSONL(syntheticExamples(count: 160, seed: 9), to: data)
        let metrics = scratch.url.appendingPathComponent("stall-metrics.jsonl").path
        let observation = Observation()
        let watcher = Thread {
            let giveUp = ContinuousClock.now + .seconds(120)
            // Mid-run: after three logged steps.
            while ContinuousClock.now < giveUp {
                if let text = try? String(contentsOfFile: metrics, encoding: .utf8), text.split(separator: "\n").count >= 3 { break }
                usleep(20_000)
            }
            guard let stopped = Self.rankProcess(1, marker: metrics), let waiting = Self.rankProcess(0, marker: metrics) else {
                observation.lock.withLock { observation.problem = "could not find the ranks' processes" }
                return
            }
            kill(stopped, SIGSTOP)
            let stoppedAt = ContinuousClock.now
            observation.lock.withLock {
                observation.stoppedAt = stoppedAt
                observation.stoppedPid = stopped
            }
            // Rank 0's CPU over 2 s, from 0.5 s after the stop (it is waiting by then).
            usleep(500_000)
            guard let before = Self.cpuSeconds(waiting) else { return }
            usleep(2_000_000)
            guard let after = Self.cpuSeconds(waiting) else { return }
            observation.lock.withLock { observation.waitingCPU = (after - before) / 2 }
        }
        watcher.start()
        let result = try MPIRun.run(
            ranks: 2,
            arguments: ["train", "--model", "tiny", "--data", data.path, "--seq-len", "64", "--max-steps", "100000",
                        "--micro-batch-size", "2", "--zero-stage", "\(stage)", "--collective-timeout", "5", "--metrics-file", metrics]
                + (progressThread ? ["--progress-thread"] : []),
            timeout: 150)
        let ended = ContinuousClock.now
        observation.lock.lock()
        defer { observation.lock.unlock() }
        if let pid = observation.stoppedPid { kill(pid, SIGKILL) }
        #expect(observation.problem == nil, "\(observation.problem ?? "")")
        guard let stoppedAt = observation.stoppedAt else {
            Issue.record("rank 1 was never stopped; status \(result.status)\nstderr:\n\(result.stderr)")
            return
        }
        #expect(result.status != 0, "the job exited 0 with a stopped rank")
        #expect(ended - stoppedAt < .seconds(15), "the job took \(ended - stoppedAt) to end after the SIGSTOP (timeout 5 s)")
        let message = result.stderr.split(separator: "\n").first { $0.contains("zero-sft: rank 0/2") } ?? ""
        #expect(message.contains("gave up after waiting") && message.contains("during step ")
                && message.contains("rank 0 on ") && message.contains("--collective-timeout 5"),
                "rank 0's message does not name the wait, the step and the rank:\n\(result.stderr)")
        #expect(message.contains("all-gather of unit") || message.contains("reduce-scatter") || message.contains("MPI_"),
                "rank 0's message does not name the collective:\n\(result.stderr)")
        if let cpu = observation.waitingCPU {
            print("collective timeout, stage \(stage)\(progressThread ? ", progress thread" : ""): job ended \(ended - stoppedAt) after the SIGSTOP; waiting rank used \(Int(cpu * 100))% of a core")
            // With --progress-thread both of rank 0's threads must back off (the thread to 10 ms sleeps).
            if stage == 3 {
                #expect(cpu < 0.25, "the waiting rank used \(Int(cpu * 100))% of a core: it should back off to sleeps")
            }
        }
    }
}
