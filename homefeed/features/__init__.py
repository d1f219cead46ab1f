"""Features: definitions, point-in-time joins, the online store and the train/serve skew check."""
