import Foundation
import Testing
@testable import TestSupport

/// The test launcher itself: output capture without pipe deadlocks, exit statuses, and a timeout
/// that kills the whole job (mpirun and its ranks) instead of hanging.
extension ProcessTests {
    @Suite("MPIRun and ChildProcess")
    struct MPIRunTests {
        /// Processes whose command line contains `marker`.
        static func processes(containing marker: String) -> [String] {
            let entries = (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []
            return entries.compactMap { entry -> String? in
                guard Int32(entry) != nil, let data = FileManager.default.contents(atPath: "/proc/\(entry)/cmdline") else { return nil }
                let commandLine = String(decoding: data.map { $0 == 0 ? 32 : $0 }, as: UTF8.self)
                return commandLine.contains(marker) ? "\(entry): \(commandLine)" : nil
            }
        }

        @Test("collects megabytes on both pipes without deadlock and reports the exit status")
        func largeOutputOnBothPipes() throws {
            // 4 MiB to stdout and 4 MiB to stderr, interleaved: a reader that drains one pipe at a time deadlocks here.
            let script = "i=0; while [ $i -lt 64 ]; do head -c 65536 /dev/zero | tr '\\000' o; head -c 65536 /dev/zero | tr '\\000' e >&2; i=$((i+1)); done; exit 7"
            let result = try ChildProcess.run(["/bin/sh", "-c", script], environment: ProcessInfo.processInfo.environment, timeout: 60)
            #expect(result.status == 7)
            #expect(result.stdout.utf8.count == 64 * 65536 && result.stdout.allSatisfy { $0 == "o" }, "stdout has \(result.stdout.utf8.count) bytes")
            #expect(result.stderr.utf8.count == 64 * 65536 && result.stderr.allSatisfy { $0 == "e" }, "stderr has \(result.stderr.utf8.count) bytes")
        }

        @Test("reports death by signal as 128 + signal")
        func signalStatus() throws {
            let result = try ChildProcess.run(["/bin/sh", "-c", "kill -9 $$"], environment: [:], timeout: 30)
            #expect(result.status == 128 + 9)
        }

        @Test("kills a hung mpirun job and all its ranks at the timeout and throws")
        func timeoutKillsTheJob() throws {
            guard let mpirun = MPIRun.findOnPath("mpirun", in: ProcessInfo.processInfo.environment["PATH"]) else {
                Issue.record("mpirun is not on the PATH: install openmpi-bin")
                return
            }
            // A unique sleep duration marks the ranks' processes (both `sh` and its `sleep` child).
            let marker = "299.\(getpid())"
            let command = [
                mpirun, "--allow-run-as-root", "--oversubscribe", "--bind-to", "none", "-n", "2",
                "/bin/sh", "-c", "echo started; sleep \(marker); echo never",
            ]
            let start = ContinuousClock.now
            #expect {
                _ = try ChildProcess.run(command, environment: ProcessInfo.processInfo.environment, timeout: 4)
            } throws: { error in
                guard case let MPIRunError.timedOut(_, seconds, _, _) = error else { return false }
                return seconds == 4
            }
            let elapsed = ContinuousClock.now - start
            #expect(elapsed < .seconds(15), "the timeout took \(elapsed) to kill the job")
            usleep(200_000)
            let survivors = Self.processes(containing: marker)
            #expect(survivors.isEmpty, "processes survived the timeout: \(survivors)")
        }

        @Test("locates the built zero-sft executable or explains how to build it")
        func locatesBinary() throws {
            let error = ZeroSFTBinaryError(searched: [URL(fileURLWithPath: "/nowhere/zero-sft")])
            #expect(error.description.contains("swift build -c release"))
            let url = try ZeroSFTBinary.locate()
            #expect(FileManager.default.isExecutableFile(atPath: url.path))
            #expect(url.lastPathComponent == "zero-sft")
        }
    }
}
