"""The zoo: the bundled configs listed with their records, and the measurement that
retrains them. Imports `tools`, `training` and below."""
