import Foundation
import Testing
@testable import TestSupport

extension ProcessTests {
    /// `zero-sft self-test` across two hosts of a `launch/cluster` cluster (network namespaces on
    /// this machine): Open MPI's TCP between the hosts, shared memory within each.
    @Suite(
        "self-test across namespace hosts",
        .enabled(if: LocalCluster.isAvailable,
                 "skipped: network namespaces cannot be created here (launch/cluster needs root and `ip netns add`)"))
    struct ClusterProcessTests {
        @Test("2 hosts × 2 ranks: every check passes, ranks placed per host, bytes cross the links")
        func selfTestOnTwoHosts() throws {
            try LocalCluster.withCluster(hosts: 2, name: "zctc", subnet: "10.213.251") { cluster in
                #expect(cluster.hosts == ["zctc-h1", "zctc-h2"])
                let sentBefore = cluster.bytesSent(by: "zctc-h1") ?? 0
                let result = try MPIRun.run(ranks: 4, arguments: ["self-test", "--large-count", "65536"],
                                            launcherArguments: cluster.mpirunArguments, timeout: 240)
                let sent = (cluster.bytesSent(by: "zctc-h1") ?? 0) - sentBefore
                #expect(result.status == 0, "exit status \(result.status)\nstdout:\n\(result.stdout)\nstderr:\n\(result.stderr)")
                #expect(result.stdout.contains("self-test: 4 ranks, MPI, on zctc-h1 [ranks 0,1]; zctc-h2 [ranks 2,3]"),
                        "ranks not placed 2 per host:\n\(result.stdout.prefix(300))")
                let counts = SelfTestProcessTests.summary(result.stdout)
                #expect(counts?.failed == 0 && (counts?.passed ?? 0) >= SelfTestProcessTests.minimumChecks,
                        "stdout:\n\(result.stdout)\nstderr:\n\(result.stderr)")
                // The large all-gather alone moves 2 × 65536 floats from host 1's ranks to host 2's.
                #expect(sent > 2 * 65536 * 4, "only \(sent) bytes left zctc-h1: MPI did not use the network")
            }
        }

        @Test("an unreachable or unknown host: launch/run stops within its connect timeout and names the host")
        func unreachableHostIsNamed() throws {
            let root = ZeroSFTBinary.packageRoot.path
            var environment = ProcessInfo.processInfo.environment
            environment["ZERO_SFT_BINARY"] = try ZeroSFTBinary.locate().path
            func shell(_ command: String) throws -> (status: Int32, stdout: String, stderr: String) {
                try ChildProcess.run(["/bin/sh", "-c", command], environment: environment, timeout: 120)
            }
            func timedRun(_ hostfile: String, ranks: Int) throws -> (status: Int32, stderr: String, seconds: Double) {
                let start = ContinuousClock.now
                let result = try shell("\(root)/launch/run --connect-timeout 3 --hostfile \(hostfile) -n \(ranks) -- self-test")
                let elapsed = ContinuousClock.now - start
                return (result.status, result.stderr, Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) * 1e-18)
            }
            try LocalCluster.withCluster(hosts: 2, name: "zctu", subnet: "10.213.250") { cluster in
                // The bridge's end of zctu-h2's link down: its packets go nowhere. mpirun alone waited
                // for that host's daemon for minutes (400 s and counting, measured), without a word.
                #expect(try shell("ip link set zctu-h2 down").status == 0)
                let down = try timedRun(cluster.hostfile, ranks: 4)
                #expect(down.status == 2, "status \(down.status), stderr:\n\(down.stderr)")
                #expect(down.stderr.contains("launch/run: host zctu-h2 cannot reach mpirun's address 10.213.250.1"),
                        "stderr does not name zctu-h2:\n\(down.stderr)")
                #expect(!down.stderr.contains("host zctu-h1 "), "the reachable host is named:\n\(down.stderr)")
                #expect(down.seconds < 20, "took \(down.seconds) s with a 3 s connect timeout")
                #expect(try shell("ip link set zctu-h2 up").status == 0)

                // A host the cluster does not have, in a copy of its hostfile.
                let text = try String(contentsOfFile: cluster.hostfile, encoding: .utf8)
                let extra = FileManager.default.temporaryDirectory.appendingPathComponent("zctu-hosts-\(ProcessInfo.processInfo.processIdentifier)").path
                try (text + "zctu-h9 slots=2\n").write(toFile: extra, atomically: true, encoding: .utf8)
                defer { try? FileManager.default.removeItem(atPath: extra) }
                let unknown = try timedRun(extra, ranks: 6)
                #expect(unknown.status == 2, "status \(unknown.status), stderr:\n\(unknown.stderr)")
                #expect(unknown.stderr.contains("launch/run: host zctu-h9 is not a host of this cluster"), "stderr:\n\(unknown.stderr)")
                #expect(unknown.seconds < 20, "took \(unknown.seconds) s")
            }
            // An ordinary (ssh) hostfile naming a host that does not resolve.
            let plain = FileManager.default.temporaryDirectory.appendingPathComponent("nohost-\(ProcessInfo.processInfo.processIdentifier)").path
            try "nohost.invalid slots=2\n".write(toFile: plain, atomically: true, encoding: .utf8)
            defer { try? FileManager.default.removeItem(atPath: plain) }
            let unresolved = try timedRun(plain, ranks: 2)
            #expect(unresolved.status == 2, "status \(unresolved.status), stderr:\n\(unresolved.stderr)")
            #expect(unresolved.stderr.contains("launch/run: host nohost.invalid does not resolve"), "stderr:\n\(unresolved.stderr)")
            #expect(unresolved.seconds < 20, "took \(unresolved.seconds) s")
        }

        @Test("a failed `up` removes what it made, and `down` is idempotent")
        func failedUpCleansUp() throws {
            let script = ZeroSFTBinary.packageRoot.appendingPathComponent("launch/cluster").path
            func shell(_ command: String) throws -> (status: Int32, stdout: String, stderr: String) {
                try ChildProcess.run(["/bin/sh", "-c", command], environment: ProcessInfo.processInfo.environment, timeout: 60)
            }
            try LocalCluster.withCluster(hosts: 1, name: "zctd", subnet: "10.213.253") { _ in
                // A second cluster on the same subnet fails after its trap is set: nothing of it may stay.
                let clash = try shell("\(script) up 2 --name zcte --subnet 10.213.253")
                #expect(clash.status != 0 && clash.stderr.contains("10.213.253.0/24 is already routed"), "stderr:\n\(clash.stderr)")
                let namespaces = try shell("ip netns list").stdout
                let links = try shell("ip -o link show").stdout
                #expect(!namespaces.contains("zcte-"), "namespaces left behind:\n\(namespaces)")
                #expect(!links.contains("zcte-"), "links left behind:\n\(links)")
                #expect(!FileManager.default.fileExists(atPath: "/run/zero-sft-cluster/zcte"), "state directory left behind")
                #expect(try shell("\(script) down --name zcte").status == 0)
                #expect(try shell("\(script) down --name zcte").status == 0)
                // The first cluster is untouched.
                #expect(namespaces.contains("zctd-h1"), "namespaces:\n\(namespaces)")
            }
            #expect(!(try shell("ip netns list").stdout.contains("zctd-")), "withCluster did not take zctd down")
        }
    }

    /// The consistency check (`--debug`) and the collective timeout, on local ranks.
    @Suite("collective watchdog and consistency check")
    struct WatchdogProcessTests {
        @Test("--debug: a rank that calls a different collective is named at once")
        func mismatchIsNamed() throws {
            let start = ContinuousClock.now
            let result = try MPIRun.run(ranks: 3, arguments: ["self-test", "--debug", "--mismatch-on-rank", "1",
                                                              "--collective-timeout", "20"], timeout: 60)
            let elapsed = ContinuousClock.now - start
            #expect(result.status != 0, "the job exited 0 although rank 1 called another collective")
            #expect(result.stderr.contains("rank 1 is the first rank that differs from rank 0: rank 1 calls allReduce sum of 16 bytes"),
                    "stderr does not name rank 1 and its call:\n\(result.stderr)")
            #expect(elapsed < .seconds(15), "the mismatch took \(elapsed) to end the job (a timeout, not the check)")
        }

        @Test("--debug: a consistent run passes every check")
        func consistentRunPasses() throws {
            let result = try MPIRun.run(ranks: 2, arguments: ["self-test", "--debug"], timeout: 180)
            #expect(result.status == 0, "stdout:\n\(result.stdout)\nstderr:\n\(result.stderr)")
            #expect(SelfTestProcessTests.summary(result.stdout)?.failed == 0, "stdout:\n\(result.stdout)")
        }

        @Test("--collective-timeout must be positive")
        func timeoutValidated() throws {
            let result = try MPIRun.run(ranks: MPIRun.withoutLauncher, arguments: ["self-test", "--collective-timeout", "0"], timeout: 30)
            #expect(result.status != 0)
            #expect(result.stderr.contains("--collective-timeout must be a positive number of seconds, got 0"), "stderr:\n\(result.stderr)")
        }
    }
}
