"""`cnnzoo lab`: the web page that edits a network, plans it as you type, trains it and
shows its runs, and the HTTP API behind it. May import every package below the CLI."""
