"""`cnnzoo serve`: a trained network behind HTTP (Starlette on uvicorn), with dynamic
batching. Imports `tools` (the Predictor) and below, never `cli`, `zoo` or `tune`."""
