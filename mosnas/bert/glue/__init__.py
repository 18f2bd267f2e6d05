"""GLUE for BERT students: the tasks in GLUE's TSV layout (data.py), the standard recipe per task (recipe.py), the
official dev metrics (metrics.py), one fine-tuning run with its recipe and KD (train.py), the harness that plans,
runs and records fine-tuning of any Hugging Face BERT folder (harness.py), and the pipeline's GLUE stage over
exported students (stage.py)."""
