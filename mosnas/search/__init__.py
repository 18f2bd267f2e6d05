"""Search algorithms as pure functions of (space, fitness, budget, seed): HAT's evolutionary search, the random
baseline at equal evaluations and the final rerank (evolution.py). No training loop, model, data or torch; a
run's search stage is mosnas.pipeline.search."""
