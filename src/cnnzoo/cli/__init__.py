"""The `cnnzoo` command line: the Typer app, its options, thin command functions; the
only place that turns errors into exit codes. May import everything."""
