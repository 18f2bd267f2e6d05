"""The training engine, for any model family: the loop (train.py: sandwich rule, DDP shares, seeded dropout,
wall budget, non-finite guard, exact resume), what trains when (schedule.py), checkpoints (checkpoint.py: the only
owner of their files), torchrun collectives (distributed.py), per-arch gradient conflict (grad_conflict.py), the
guards of a run folder (run_folder.py) and loading a trained run back (load.py). It asks the run's family
(mosnas.family) for batches and losses and never names one."""
