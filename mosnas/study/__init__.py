"""`mosnas study`: does MoS deliver? A harness that measures, per weight generator (a named variant of a base
run config) under identical data, space, steps and seeds: supernet fidelity against the same archs trained
from scratch, the cost of retraining a searched subnet (and a compute-matched dense control), and the Pareto
front of searched, fine-tuned subnets. Work is split into resumable pieces, each recording its inputs.

config.py (the study YAML), stats.py (pure statistics), archs.py (the fixed arch set, compute accounting),
pieces.py (records: skip, refuse, redo), work.py (training and evaluation pieces), retrain.py (retraining,
control, Pareto), plan.py (the pieces in order, estimates), report.py and figures.py (Markdown, JSON, plots);
the command is mosnas.cli.study."""
