"""Running the DVC pipeline on a schedule: `dvcfile` (the stage list, read from dvc.yaml), `dag` (DVC's
Python API: order, up-to-date checks, running a stage), `tasks` and `deploy` (Prefect), `landing`,
`overrides`, `promotion` (git and DVC after a promotion) and `summary`."""

__all__ = ["dag", "deploy", "dvcfile", "landing", "overrides", "promotion", "summary", "tasks"]
