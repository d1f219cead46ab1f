"""The data stage: ingestion with contracts and quarantine, the lake, ETL and daily data checks."""
