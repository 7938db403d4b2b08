import Foundation

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// A cluster of network-namespace hosts on this machine (`launch/cluster`), for tests that cross a
/// network: Open MPI uses TCP between the hosts and shared memory within one.
///
/// ``withCluster(hosts:name:subnet:slots:_:)`` brings it up, runs the body and always takes it down
/// (also when the body throws). Give each suite its own `name` and `subnet`, so that it never meets a
/// user's cluster (default `zsft`, 10.213.0.0/24) or another suite's.
public final class LocalCluster {
    /// The cluster's name: its hosts are `name-h1` … and its bridge `name-br`.
    public let name: String
    /// The hostfile `launch/cluster up` wrote.
    public let hostfile: String
    /// The host names, in hostfile order.
    public let hosts: [String]
    /// The mpirun options that run on this cluster, as `launch/run` adds them: the hostfile, the
    /// namespace agent instead of ssh, and MPI's TCP traffic on the cluster's subnet.
    public let mpirunArguments: [String]

    private var isUp = true

    /// Why clusters cannot be made here (not root, no `ip`, or `ip netns add` refused), or `nil`.
    /// Probed once, by adding and deleting a namespace.
    public static let unavailableReason: String? = {
        guard getuid() == 0 else { return "network namespaces need root (launch/cluster)" }
        guard MPIRun.findOnPath("ip", in: "/usr/sbin:/sbin:/usr/bin:/bin") != nil else { return "`ip` (iproute2) is not installed" }
        let probe = "zsft-probe-\(getpid())"
        guard let added = try? shell("ip netns add \(probe) && ip netns delete \(probe)"), added.status == 0 else {
            return "`ip netns add` failed here (no CAP_SYS_ADMIN or no network namespaces)"
        }
        return nil
    }()

    /// Whether ``unavailableReason`` is `nil`.
    public static var isAvailable: Bool { unavailableReason == nil }

    /// Brings up `hosts` hosts with `slots` slots each, runs `body`, and takes the cluster down.
    public static func withCluster<Result>(
        hosts: Int, name: String, subnet: String, slots: Int = 2, _ body: (LocalCluster) throws -> Result
    ) throws -> Result {
        let cluster = try up(hosts: hosts, name: name, subnet: subnet, slots: slots)
        defer { cluster.down() }
        return try body(cluster)
    }

    /// `launch/cluster up` (after a `down` of any leftover cluster of the same name).
    public static func up(hosts: Int, name: String, subnet: String, slots: Int = 2) throws -> LocalCluster {
        let script = ZeroSFTBinary.packageRoot.appendingPathComponent("launch/cluster").path
        _ = try shell("\(script) down --name \(name)")
        let result = try shell("\(script) up \(hosts) --name \(name) --subnet \(subnet) --slots \(slots)")
        guard result.status == 0, let path = result.stdout.split(separator: "\n").last.map(String.init),
            let text = try? String(contentsOfFile: path, encoding: .utf8)
        else {
            throw LocalClusterError(description: "launch/cluster up \(hosts) --name \(name) failed (status \(result.status)):\n\(result.stderr)")
        }
        return LocalCluster(name: name, hostfile: path, hostfileText: text, script: script)
    }

    private let script: String

    private init(name: String, hostfile: String, hostfileText: String, script: String) {
        self.name = name
        self.hostfile = hostfile
        self.script = script
        let lines = hostfileText.split(separator: "\n").map(String.init)
        hosts = lines.filter { !$0.hasPrefix("#") }.compactMap { $0.split(separator: " ").first.map(String.init) }
        var arguments = ["--hostfile", hostfile]
        if let header = lines.first(where: { $0.hasPrefix("# zero-sft-cluster ") }) {
            var fields: [String: String] = [:]
            for word in header.split(separator: " ") {
                let parts = word.split(separator: "=", maxSplits: 1)
                if parts.count == 2 { fields[String(parts[0])] = String(parts[1]) }
            }
            arguments += ["--mca", "plm_rsh_agent", fields["agent"] ?? "", "--mca", "plm_rsh_no_tree_spawn", "1",
                          "--mca", "btl", "self,vader,tcp",
                          "--mca", "btl_tcp_if_include", fields["subnet"] ?? "", "--mca", "oob_tcp_if_include", fields["subnet"] ?? ""]
        }
        mpirunArguments = arguments
    }

    /// Bytes sent from `host` over its link (the root end's receive counter), from sysfs.
    public func bytesSent(by host: String) -> Int? {
        guard let text = try? String(contentsOfFile: "/sys/class/net/\(host)/statistics/rx_bytes", encoding: .utf8) else { return nil }
        return Int(text.trimmingCharacters(in: .whitespacesAndNewlines))
    }

    /// `launch/cluster down`; idempotent.
    public func down() {
        guard isUp else { return }
        isUp = false
        _ = try? Self.shell("\(script) down --name \(name)")
    }

    deinit { down() }

    static func shell(_ command: String) throws -> (status: Int32, stdout: String, stderr: String) {
        try ChildProcess.run(["/bin/sh", "-c", command], environment: ProcessInfo.processInfo.environment, timeout: 60)
    }
}

/// `launch/cluster up` failed.
public struct LocalClusterError: Error, CustomStringConvertible {
    public var description: String
}
