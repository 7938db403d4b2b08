// Placeholder: the Checkpoints helper owns this module.
public enum CheckpointsPlaceholder {}
