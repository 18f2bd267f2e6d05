"""`mosnas run`'s stages over a run folder, each skipped while its outputs are fresh: the stage list (run.py),
latency (latency.py: measure, fit, the budget predictor), search (search.py), budgets held when re-measured
(winner.py), export (export.py), fine-tuning and from-scratch training of a subnet (finetune.py), the summary and
plots (report.py, rebuild.py), and AutoDistil's K sub-space runs (autodistil.py)."""
