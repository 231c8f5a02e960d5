"""Watching the deployed model: Evidently behind one adapter (`evidently_adapter`), the window of the
prediction log (`window`), the typed summary (`summary`), the pure retraining policy (`policy`), one monitoring
run (`monitor`) and labelled feedback landed as a new batch (`feedback`)."""

__all__ = ["evidently_adapter", "feedback", "monitor", "policy", "summary", "window"]
