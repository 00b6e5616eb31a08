"""Leaf helpers with no knowledge of networks: atomic files, pictures, `auto` options,
typed parameters, tables and durations. Imports nothing of cnnzoo but `errors`."""
