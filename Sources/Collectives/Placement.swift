extension Communicator {
    /// Every rank's host name (``hostName``), in rank order: an all-gather of 64-byte slots, so
    /// longer names are cut at 64 bytes. A collective: every rank calls it.
    public func hostNames() throws -> [String] {
        let width = 64
        var name = Array(hostName.utf8.prefix(width))
        name += [UInt8](repeating: 0, count: width - name.count)
        let names = try allGather(name)
        return (0..<size).map { r in String(decoding: names[r * width..<(r + 1) * width].prefix { $0 != 0 }, as: UTF8.self) }
    }

    /// Which ranks run on which host, hosts in order of their first rank:
    /// `"node1 [ranks 0,1]; node2 [ranks 2,3]"` for `hostNames` `["node1", "node1", "node2", "node2"]`.
    public static func describePlacement(_ hostNames: [String]) -> String {
        var ranksByHost: [(host: String, ranks: [Int])] = []
        for (rank, host) in hostNames.enumerated() {
            if let index = ranksByHost.firstIndex(where: { $0.host == host }) {
                ranksByHost[index].ranks.append(rank)
            } else {
                ranksByHost.append((host, [rank]))
            }
        }
        return ranksByHost.map { "\($0.host) [rank\($0.ranks.count == 1 ? "" : "s") \($0.ranks.map(String.init).joined(separator: ","))]" }
            .joined(separator: "; ")
    }
}
