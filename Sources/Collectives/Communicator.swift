internal import CMPI
// Placeholder: the Collectives helper owns this module.
public enum CollectivesPlaceholder {}
