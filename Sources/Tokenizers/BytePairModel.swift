import Synchronization

/// The BPE model of a byte-level tokenizer: turns one pre-token (raw bytes) into token ids.
///
/// It is HF `tokenizers`' `BPE::tokenize` specialised to byte-level vocabularies:
/// - each byte starts as the symbol of its byte-level character (`idForByte`); a byte whose character is
///   not in the vocabulary becomes `unk_token` (fused with a neighbouring unknown when `fuse_unk`) or is
///   dropped when there is no `unk_token`, as in HF;
/// - with `ignore_merges` a pre-token that is itself in the vocabulary is returned whole;
/// - otherwise merges are applied by HF's `Word::merge_all`: a min-heap of (rank, position) over adjacent
///   pairs, popping the lowest rank and then the leftmost position, skipping entries whose pair has
///   changed (HF compares the merged id), and pushing the pairs a merge creates with its neighbours.
///
/// Merge ranks live in a hash table keyed by the pair of ids packed in a `UInt64` (never strings).
/// Results for pre-tokens up to 24 bytes are cached (up to 10 000 entries, like HF's BPE cache).
final class BytePairModel: Sendable {
    /// The id of each byte's byte-level character, or -1 when it is not in the vocabulary.
    let idForByte: [Int32]
    /// (left id << 32 | right id) → (rank << 32 | merged id).
    let merges: MergeTable
    /// HF `ignore_merges`: raw bytes of whole-vocabulary tokens → id, when enabled.
    let wholeWordIDs: [[UInt8]: Int32]?
    let unknownID: Int32?
    let fuseUnknown: Bool

    private let cache = Mutex<[WordKey: [Int32]]>([:])
    static let cacheCapacity = 10_000

    init(idForByte: [Int32], merges: [UInt64: UInt64], wholeWordIDs: [[UInt8]: Int32]?, unknownID: Int32?, fuseUnknown: Bool) {
        precondition(idForByte.count == 256)
        self.idForByte = idForByte
        self.merges = MergeTable(merges)
        self.wholeWordIDs = wholeWordIDs
        self.unknownID = unknownID
        self.fuseUnknown = fuseUnknown
    }

    /// Appends the ids of the pre-token `word` (raw bytes, not empty) to `output`.
    func encode(_ word: UnsafeBufferPointer<UInt8>, into output: inout [Int]) {
        if word.count == 1, unknownID == nil {
            let id = idForByte[Int(word[0])]
            if id >= 0 { output.append(Int(id)) }
            return
        }
        let key = WordKey(word)
        if let key, let cached = cache.withLock({ $0[key] }) {
            for id in cached { output.append(Int(id)) }
            return
        }
        let ids: [Int32]
        if let wholeWordIDs, let id = wholeWordIDs[Array(word)] {
            ids = [id]
        } else {
            ids = mergeWord(word)
        }
        for id in ids { output.append(Int(id)) }
        if let key {
            cache.withLock { cache in
                if cache.count < Self.cacheCapacity { cache[key] = ids }
            }
        }
    }

    /// A symbol of HF's `Word`: an id, links to its live neighbours, and its length (0 once merged away).
    private struct Symbol {
        var id: Int32
        var previous: Int32
        var next: Int32
        var length: Int32
    }

    private func mergeWord(_ word: UnsafeBufferPointer<UInt8>) -> [Int32] {
        var symbols: [Symbol] = []
        symbols.reserveCapacity(word.count)
        func add(_ id: Int32, _ length: Int32) {
            let count = Int32(symbols.count)
            if !symbols.isEmpty { symbols[symbols.count - 1].next = count }
            symbols.append(Symbol(id: id, previous: count - 1, next: -1, length: length))
        }
        var pendingUnknown: (id: Int32, length: Int32)?
        for byte in word {
            let id = idForByte[Int(byte)]
            if id >= 0 {
                if let unknown = pendingUnknown {
                    add(unknown.id, unknown.length)
                    pendingUnknown = nil
                }
                add(id, 1)
            } else if let unknownID {
                if let unknown = pendingUnknown {
                    if fuseUnknown {
                        pendingUnknown = (unknown.id, unknown.length + 1)
                    } else {
                        add(unknown.id, unknown.length)
                        pendingUnknown = (unknownID, 1)
                    }
                } else {
                    pendingUnknown = (unknownID, 1)
                }
            }
        }
        if let unknown = pendingUnknown { add(unknown.id, unknown.length) }
        if symbols.count < 2 { return symbols.map(\.id) }

        var heap = MergeHeap()
        heap.reserve(symbols.count)
        for position in 0..<(symbols.count - 1) {
            if let merge = merges[Self.pairKey(symbols[position].id, symbols[position + 1].id)] {
                heap.push(rank: UInt32(merge >> 32), position: UInt32(position), newID: Int32(truncatingIfNeeded: merge))
            }
        }
        while let top = heap.pop() {
            let position = Int(top.position)
            if symbols[position].length == 0 { continue }
            if symbols[position].next == -1 { continue }
            let nextPosition = Int(symbols[position].next)
            let right = symbols[nextPosition]
            // Skip entries made stale by an earlier merge (HF compares the merged id).
            guard let current = merges[Self.pairKey(symbols[position].id, right.id)],
                Int32(truncatingIfNeeded: current) == top.newID
            else { continue }
            symbols[position].id = top.newID
            symbols[position].length += right.length
            symbols[position].next = right.next
            symbols[nextPosition].length = 0
            if right.next > -1, Int(right.next) < symbols.count {
                symbols[Int(right.next)].previous = Int32(position)
            }
            let merged = symbols[position]
            if merged.previous >= 0 {
                let previousPosition = Int(merged.previous)
                if let merge = merges[Self.pairKey(symbols[previousPosition].id, merged.id)] {
                    heap.push(rank: UInt32(merge >> 32), position: UInt32(previousPosition), newID: Int32(truncatingIfNeeded: merge))
                }
            }
            if merged.next >= 0, Int(merged.next) < symbols.count {
                if let merge = merges[Self.pairKey(merged.id, symbols[Int(merged.next)].id)] {
                    heap.push(rank: UInt32(merge >> 32), position: UInt32(position), newID: Int32(truncatingIfNeeded: merge))
                }
            }
        }
        var ids: [Int32] = []
        ids.reserveCapacity(symbols.count)
        for symbol in symbols where symbol.length != 0 { ids.append(symbol.id) }
        return ids
    }

    @inline(__always)
    static func pairKey(_ left: Int32, _ right: Int32) -> UInt64 {
        UInt64(UInt32(bitPattern: left)) << 32 | UInt64(UInt32(bitPattern: right))
    }
}

/// A binary min-heap of pending merges ordered by (rank, position), as HF's `BinaryHeap<Merge>`.
private struct MergeHeap {
    private var keys: [UInt64] = []
    private var newIDs: [Int32] = []

    mutating func reserve(_ capacity: Int) {
        keys.reserveCapacity(capacity)
        newIDs.reserveCapacity(capacity)
    }

    mutating func push(rank: UInt32, position: UInt32, newID: Int32) {
        var index = keys.count
        keys.append(UInt64(rank) << 32 | UInt64(position))
        newIDs.append(newID)
        while index > 0 {
            let parent = (index - 1) / 2
            if keys[parent] <= keys[index] { break }
            keys.swapAt(parent, index)
            newIDs.swapAt(parent, index)
            index = parent
        }
    }

    mutating func pop() -> (position: UInt32, newID: Int32)? {
        guard let top = keys.first else { return nil }
        let result = (position: UInt32(truncatingIfNeeded: top), newID: newIDs[0])
        let last = keys.count - 1
        keys.swapAt(0, last)
        newIDs.swapAt(0, last)
        keys.removeLast()
        newIDs.removeLast()
        var index = 0
        let count = keys.count
        while true {
            let left = 2 * index + 1
            if left >= count { break }
            let right = left + 1
            let child = right < count && keys[right] < keys[left] ? right : left
            if keys[index] <= keys[child] { break }
            keys.swapAt(index, child)
            newIDs.swapAt(index, child)
            index = child
        }
        return result
    }
}

/// A pre-token of at most 24 bytes packed into integers: a cache key that needs no allocation.
struct WordKey: Hashable, Sendable {
    private var word0: UInt64 = 0
    private var word1: UInt64 = 0
    private var word2: UInt64 = 0
    private var count: Int

    init?(_ bytes: UnsafeBufferPointer<UInt8>) {
        guard bytes.count <= 24 else { return nil }
        count = bytes.count
        for (index, byte) in bytes.enumerated() {
            let shifted = UInt64(byte) << UInt64(8 * (index & 7))
            switch index >> 3 {
            case 0: word0 |= shifted
            case 1: word1 |= shifted
            default: word2 |= shifted
            }
        }
    }
}

/// An open-addressing hash table from a packed id pair to a packed (rank, merged id).
///
/// Swift's `Dictionary` hashes every lookup with seeded SipHash; merge lookups dominate BPE, and a
/// multiplicative hash with linear probing over two flat arrays is about twice as fast here.
struct MergeTable: Sendable {
    private static let empty = UInt64.max  // never a pair key: ids are below 2^31
    private let keys: [UInt64]
    private let values: [UInt64]
    private let shift: UInt64
    private let mask: Int
    let count: Int

    /// `pairs`: (left id << 32 | right id) → (rank << 32 | merged id). A repeated pair keeps its last value.
    init(_ pairs: [UInt64: UInt64]) {
        var bits: UInt64 = 4
        while (1 << bits) < pairs.count * 2 { bits += 1 }
        let capacity = 1 << Int(bits)
        var keys = [UInt64](repeating: Self.empty, count: capacity)
        var values = [UInt64](repeating: 0, count: capacity)
        let shift = 64 - bits
        let mask = capacity - 1
        for (key, value) in pairs {
            var slot = Int(truncatingIfNeeded: (key &* 0x9E37_79B9_7F4A_7C15) >> shift)
            while keys[slot] != Self.empty { slot = (slot + 1) & mask }
            keys[slot] = key
            values[slot] = value
        }
        self.keys = keys
        self.values = values
        self.shift = shift
        self.mask = mask
        self.count = pairs.count
    }

    @inline(__always)
    subscript(key: UInt64) -> UInt64? {
        var slot = Int(truncatingIfNeeded: (key &* 0x9E37_79B9_7F4A_7C15) >> shift)
        while true {
            let found = keys[slot]
            if found == key { return values[slot] }
            if found == Self.empty { return nil }
            slot = (slot + 1) & mask
        }
    }
}
