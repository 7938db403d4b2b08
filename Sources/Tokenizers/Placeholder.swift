// Placeholder: the Tokenizers helper owns this module.
public enum TokenizersPlaceholder {}
