"""Measurements that compare cnnzoo with an independent baseline: benchmarks,
denoising, hand-written reference networks. Imports `training` and below."""
