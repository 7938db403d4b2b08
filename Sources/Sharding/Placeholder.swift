public enum ShardingPlaceholder {}
