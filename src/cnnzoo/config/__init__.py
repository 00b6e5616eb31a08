"""The experiment file without torch: YAML reading, overrides, limits, the datasets a
config may name, the schema, and the one place that knows the bundled configs.
Imports `layers` (the layer vocabulary) and `utils`."""
