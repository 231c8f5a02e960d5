"""`evergreen tune`: an Optuna study over the declared search space (`tune:` in params.yaml)."""
