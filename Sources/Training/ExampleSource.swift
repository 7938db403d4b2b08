/// The examples a run trains or evaluates on, by index: in memory (`[SFTExample]`) or memory-mapped
/// from a prepared token file. The packing plan needs only lengths and supervised counts; tokens are
/// read when a micro-batch is built.
public protocol ExampleSource: Sendable {
    /// Number of examples.
    var count: Int { get }
    /// Tokens of example `index` (input_ids count).
    func length(_ index: Int) -> Int
    /// Positions of example `index` whose label is not -100 (the first position never is).
    func supervisedCount(_ index: Int) -> Int
    /// Example `index`'s input_ids and labels.
    func example(_ index: Int) -> SFTExample
}

extension Array: ExampleSource where Element == SFTExample {
    public func length(_ index: Int) -> Int { self[index].count }
    public func supervisedCount(_ index: Int) -> Int { self[index].supervisedCount }
    public func example(_ index: Int) -> SFTExample { self[index] }
}
