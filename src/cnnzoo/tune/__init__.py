"""Hyperparameter search on Optuna: the search space, the study, its report. Imports
`training` and below."""
