"""What a run leaves on disk and how it is read back: the run directory, its lock, the
checkpoint format, packed and downloaded weights, `--init-from`.
Imports `data`, `model` and below."""
