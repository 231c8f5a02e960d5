"""Watching the deployed model: Evidently behind one adapter (`evidently_adapter`), the per-version scores
(`performance`), the report's files and workspace (`report_files`), the window of the prediction log
(`window`), the typed summary (`summary`), the pure retraining policy (`policy`), one monitoring run (`monitor`)
and labelled feedback landed as a new batch (`feedback`)."""

__all__ = [
    "evidently_adapter",
    "feedback",
    "monitor",
    "performance",
    "policy",
    "report_files",
    "summary",
    "window",
]
