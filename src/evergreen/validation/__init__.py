"""Data contracts: suites generated from the declaration (`suites`), Great Expectations behind one adapter
(`gx_adapter`), the typed result (`summary`) and the shared body of the validation stages (`stage`)."""

__all__ = ["gx_adapter", "stage", "suites", "summary"]
