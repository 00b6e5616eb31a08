"""`cnnzoo lab`: the web page that edits a network, plans it as you type, trains it and
shows its runs, and the HTTP API behind it. Imports `zoo`, `tools` and below, never
`cli` or its sibling `serve`."""
