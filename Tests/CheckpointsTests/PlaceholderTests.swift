import Testing
@Test func placeholderCheckpointsTests() { #expect(Bool(true)) }
