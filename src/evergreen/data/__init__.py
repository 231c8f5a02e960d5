"""Data work, all polars: reading sources as text (`io`), `ingest`, `clean`, `split`, and the column
conventions every stage shares (`schema`). Modules are imported by name; this package imports none of them,
so a stage loads (and DVC tracks) only the modules it uses."""

__all__ = ["clean", "ingest", "io", "schema", "split"]
