import Collectives

extension ParsedChatData {
    /// The conversations of rank `rank` of `ranks`: a contiguous slice, balanced by count.
    public static func slice(count: Int, rank: Int, ranks: Int) -> Range<Int> {
        (rank * count / ranks)..<((rank + 1) * count / ranks)
    }

    /// Tokenizes the file across the ranks and gives every rank all of it, in file order: rank `r`
    /// encodes the conversations of ``slice(count:rank:ranks:)`` and the slices are exchanged with
    /// ``Collectives/Communicator/allGatherVariable(_:)``. The result equals ``encode(_:encoder:options:vocabularySize:each:)``
    /// over the whole file on one rank, example for example.
    ///
    /// Errors: a record that fails to encode (an id outside the vocabulary, `--strict` without a supervised
    /// token) is agreed on by every rank (the earliest in the file wins) and every rank throws the same
    /// ``DataError`` naming it, so the job ends with that line whichever rank found it. Every other error a
    /// record can have was found by ``ChatDataset/parse(from:vocabularySize:)`` before any rank started.
    public func encodeSharded(encoder: ChatEncoder, options: ChatDataOptions, vocabularySize: Int,
                              communicator: Communicator) throws -> LoadedData {
        let count = conversations.count
        let mine = Self.slice(count: count, rank: communicator.rank, ranks: communicator.size)
        var encoded = Encoded()
        var failure: (index: Int, error: DataError)?
        for index in mine {
            do {
                let one = try encode(index..<(index + 1), encoder: encoder, options: options, vocabularySize: vocabularySize)
                encoded.examples += one.examples
                encoded.recordNumbers += one.recordNumbers
                encoded.skipped += one.skipped
            } catch let error as DataError {
                failure = (index, error)
                break
            }
        }
        // The earliest failing record of the file, agreed by every rank; its rank sends the message.
        let firstFailure = Int(try communicator.allReduce(Int64(failure?.index ?? count), .min))
        if firstFailure < count {
            let message = failure?.index == firstFailure ? Array((failure?.error.message ?? "").utf8) : []
            let messages = try communicator.allGatherVariable(message)
            let text = messages.first { !$0.isEmpty }.map { String(decoding: $0, as: UTF8.self) } ?? "tokenization failed"
            throw DataError(path: path, line: numberedByLine ? recordNumbers[firstFailure] : nil, message: text)
        }
        let lengths = try communicator.allGatherVariable(encoded.examples.map { Int64($0.count) })
        let numbers = try communicator.allGatherVariable(encoded.recordNumbers.map(Int64.init))
        let skipped = try communicator.allGatherVariable(encoded.skipped.map(Int64.init))
        let ids = try communicator.allGatherVariable(encoded.examples.flatMap(\.inputIDs))
        let labels = try communicator.allGatherVariable(encoded.examples.flatMap(\.labels))
        var all = Encoded()
        for rank in 0..<communicator.size {
            var position = 0
            for length in lengths[rank].map(Int.init) {
                all.examples.append(SFTExample(inputIDs: Array(ids[rank][position..<(position + length)]),
                                               labels: Array(labels[rank][position..<(position + length)])))
                position += length
            }
            all.recordNumbers += numbers[rank].map(Int.init)
            all.skipped += skipped[rank].map(Int.init)
        }
        return try loaded(all, options: options, encoder: encoder)
    }
}
