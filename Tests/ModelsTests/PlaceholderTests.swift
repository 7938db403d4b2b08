import Testing
@Test func placeholderModelsTests() { #expect(Bool(true)) }
