import Foundation
import Testing
import TestSupport

/// Tests that start processes, one at a time (the machine may have few cores and MPI ranks spin).
///
/// They need the executable: `swift build -c release && swift test -c release`.
@Suite("Processes", .serialized)
enum ProcessTests {}

extension ProcessTests {
    /// Runs `zero-sft self-test` as separate processes: without a launcher and under `mpirun` with
    /// 1, 2 and 3 ranks, where every rank checks every collective against values it computes itself.
    @Suite("zero-sft self-test across processes")
    struct SelfTestProcessTests {
        /// The self-test runs 63 checks; fewer means checks went missing.
        static let minimumChecks = 63
        static let timeout = 180.0

        /// The `N passed, M failed` counts of the final line, or `nil` when the line is missing.
        static func summary(_ stdout: String) -> (passed: Int, failed: Int)? {
            guard let line = stdout.split(separator: "\n").last(where: { $0.hasPrefix("self-test: ") && $0.contains(" passed, ") })
            else { return nil }
            let words = line.split(separator: " ")
            guard words.count >= 5, let passed = Int(words[1]), let failed = Int(words[3]) else { return nil }
            return (passed, failed)
        }

        func expectAllPassed(_ result: (status: Int32, stdout: String, stderr: String), ranks: Int, usesMPI: Bool) {
            #expect(result.status == 0, "exit status \(result.status) with \(ranks) rank(s)\nstderr:\n\(result.stderr)")
            let counts = Self.summary(result.stdout)
            #expect(counts != nil, "no `self-test: N passed, M failed` line in stdout:\n\(result.stdout)")
            if let counts {
                #expect(counts.failed == 0, "\(counts.failed) checks failed with \(ranks) rank(s):\n\(result.stdout)\n\(result.stderr)")
                #expect(counts.passed >= Self.minimumChecks, "only \(counts.passed) checks ran, expected at least \(Self.minimumChecks)")
            }
            let header = "self-test: \(ranks) rank\(ranks == 1 ? "" : "s"), \(usesMPI ? "MPI," : "no MPI")"
            #expect(result.stdout.contains(header), "expected the header `\(header)…` in stdout:\n\(result.stdout.prefix(400))")
            #expect(!result.stdout.contains("FAIL"), "a check failed:\n\(result.stdout)")
        }

        @Test("passes as one rank without mpirun, without initialising MPI")
        func withoutLauncher() throws {
            let result = try MPIRun.run(ranks: MPIRun.withoutLauncher, arguments: ["self-test"], timeout: Self.timeout)
            expectAllPassed(result, ranks: 1, usesMPI: false)
        }

        @Test("passes under mpirun", arguments: [1, 2, 3])
        func underMPIRun(ranks: Int) throws {
            let result = try MPIRun.run(ranks: ranks, arguments: ["self-test"], timeout: Self.timeout)
            expectAllPassed(result, ranks: ranks, usesMPI: true)
        }

        /// `--progress-thread`: MPI initialised `MPI_THREAD_MULTIPLE`, every check passes with the
        /// communication thread testing the collectives in flight, and its own check (a ring and an
        /// all-gather complete during compute that makes no MPI call) runs and passes.
        @Test("passes under mpirun with --progress-thread, with its own check", arguments: [2, 3])
        func withProgressThread(ranks: Int) throws {
            let result = try MPIRun.run(ranks: ranks, arguments: ["self-test", "--progress-thread"], timeout: Self.timeout)
            expectAllPassed(result, ranks: ranks, usesMPI: true)
            #expect(result.stdout.contains("ok    progress thread: a ring and an allGather in flight complete"),
                    "the progress thread's check did not run or pass:\n\(result.stdout)")
        }

        @Test("a rank that throws aborts the whole job quickly, naming the rank and the error", arguments: [false, true])
        func failingRankAbortsTheJob(progressThread: Bool) throws {
            let start = ContinuousClock.now
            let result = try MPIRun.run(ranks: 3, arguments: ["self-test", "--fail-on-rank", "1"] + (progressThread ? ["--progress-thread"] : []),
                                        timeout: 60)
            let elapsed = ContinuousClock.now - start
            #expect(result.status != 0, "the job exited 0 although rank 1 threw\nstdout:\n\(result.stdout)")
            #expect(
                result.stderr.contains("zero-sft: rank 1/3 (") && result.stderr.contains("injected failure requested by --fail-on-rank 1"),
                "stderr does not name rank 1 and its error:\n\(result.stderr)")
            // Open MPI's MPI_ABORT banner is best effort: under load its help printer can fail
            // ("ORTE_ERROR_LOG: Out of resource in show_help.c"), so the banner is not required;
            // the quick non-zero exit, our message and the missing summary are what show the abort.
            #expect(elapsed < .seconds(30), "the aborted job took \(elapsed) to end")
            #expect(Self.summary(result.stdout) == nil, "the self-test reached its summary although rank 1 failed")
        }

        @Test("--fail-on-rank past the last rank is reported, not ignored")
        func failOnMissingRank() throws {
            let result = try MPIRun.run(ranks: 2, arguments: ["self-test", "--fail-on-rank", "5"], timeout: 60)
            #expect(result.status != 0)
            #expect(result.stderr.contains("--fail-on-rank 5 is not a rank of this 2-rank job"), "stderr:\n\(result.stderr)")
        }
    }
}
