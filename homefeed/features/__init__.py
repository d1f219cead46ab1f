"""The features stage: feature definitions, point-in-time joins, the online store (SQLite | Redis), skew checks."""
