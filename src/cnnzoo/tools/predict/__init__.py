"""`cnnzoo predict` and `cnnzoo.Predictor`: the network that answers (predictor), the
paths it reads (inputs), the files it writes (outputs), and the two joined (stream)."""
