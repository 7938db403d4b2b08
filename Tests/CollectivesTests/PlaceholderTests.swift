import Testing
@Test func placeholderCollectivesTests() { #expect(Bool(true)) }
