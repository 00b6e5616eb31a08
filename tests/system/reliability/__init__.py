"""What cnnzoo promises when things go wrong, one file per promise; docs/reliability.md
lists each promise with its test."""
