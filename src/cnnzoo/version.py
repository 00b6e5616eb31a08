"""The package's version, written once: pyproject.toml reads it from here (hatch), and
run directories record it (cnnzoo.runs.rundir) without importing the whole package."""

__version__ = "0.1.0"
