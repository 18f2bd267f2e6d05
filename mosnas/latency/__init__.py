"""Latency and memory, for any workload: timing (measure.py: warm-ups, interleaved rounds, the noise floor),
predictors on the arch embedding (predictors.py: HAT's MLP, linear), the per-layer lookup table (table.py),
portable datasets measured elsewhere such as HAT's (datasets.py), a saved predictor of any kind loaded back
(load.py), peak memory (memory.py) and the statistics of predictions against measurements (stats.py). A run's
latency stage is mosnas.pipeline.latency."""
