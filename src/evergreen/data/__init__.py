"""Data work, all polars: reading sources as text (`io`), `ingest`, `clean`, `split`, and the column
conventions every stage shares (`schema`); partitioned datasets (`partitions`) and the stages' partition by
partition bodies (`ingest_partitions`, `clean_partitions`). Modules are imported by name; this package imports
none of them, so a stage loads (and DVC tracks) only the modules it uses."""

__all__ = ["clean", "clean_partitions", "ingest", "ingest_partitions", "io", "partitions", "schema", "split"]
