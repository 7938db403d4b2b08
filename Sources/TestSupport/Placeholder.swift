// Placeholder: helpers for tests that start the zero-sft binary under mpirun (owned by the Collectives helper).
public enum TestSupportPlaceholder {}
