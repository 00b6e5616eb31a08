"""Commands on a finished run or an image: evaluate, predict, export, viz, compare,
filter. Imports `training` (evaluation, losses) and below, never `cli`, `tune` or `zoo`."""
