"""Files on disk, below everything else: the run folder's layout (run_dir.py: `RunDir`), an exported model's
folder (model_dir.py: `ModelDir`), what each output was made from and whether it still holds, with atomic JSON
(records.py), one writer per run folder (lock.py), and where a config's paths point (paths.py)."""
