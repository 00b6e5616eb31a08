"""From a config to a network: the layer plan (shapes, costs), the builder, the summary,
what a built network holds, and the device it runs on. Imports `config`, `layers`, `utils`."""
