"""mosnas: neural architecture search for NLP Transformers with Mixture-of-Supernets."""

import ctypes

__version__ = "0.1.0"


def tune_malloc() -> None:
    """Keep freed memory in the process instead of returning it to the OS at every step.

    Variable batch shapes make glibc return and re-fetch memory at every training step (~40% of a CPU
    step measured here). Call it before torch allocates anything (the CLI does, first thing); it lives
    here, in the package's torch-free root, so that importing it imports nothing else."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-1, 1 << 36)  # M_TRIM_THRESHOLD: never trim the heap
        libc.mallopt(-3, 1 << 25)  # M_MMAP_THRESHOLD: its maximum (32 MiB); larger blocks are rare
    except (OSError, AttributeError):
        pass
