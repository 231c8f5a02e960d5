"""The backtest (`evergreen simulate`): replay the project's history as production traffic and compare policies.

The first model is trained on everything before `simulate.start` (2011 for the bike data). Then the rest of
the history arrives in windows (a week by default), in time order, through the same functions production uses:
the champion scores each window with the serving code path and every prediction goes to a prediction log;
labels are fed back after the window. Between windows a policy may retrain:

- `never`: the first model serves to the end;
- `periodic`: a retrain at the first window of every month;
- `drift`: the real monitor (Evidently) and the declared policy (`monitor.policy`) decide;
- `periodic_warm`, `drift_warm`: the same decisions, but each retrain starts from the champion's weights
  (`train.init: champion`) and fine-tunes; each policy's summary has its retrains' `train_seconds`.

A retrain is the real one: labelled feedback lands as a new batch and DVC brings the pipeline of the policy's
own workspace (a project folder with `dvc.yaml`, see `sandbox`) up to date, through the same runner as the
Prefect flow; the gate decides whether the challenger replaces the champion. Errors are measured on every
window's rows. Writes `summary.json` and `error_over_time.png` to the output folder.
"""

from evergreen.backtest.replay import backtest

__all__ = ["backtest"]
