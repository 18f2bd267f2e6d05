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


# The Python API: the few names a user needs, each the same function the CLI calls (resolved on first use, so
# `import mosnas` loads no torch). Everything else is reachable by its folder (mosnas.core, mosnas.engine, ...).
_API = {
    "Config": "mosnas.config",  # the validated, frozen run config
    "load_config": "mosnas.config",  # YAML + key=value overrides -> Config
    "Space": "mosnas.core.space",  # a search space: sample, mutate, crossover, validate, embed
    "load_space": "mosnas.family",  # a family's search-space YAML -> Space
    "family_of": "mosnas.family",  # "mt" | "bert" -> the family's functions
    "Supernet": "mosnas.core.supernet",  # max-size tensors behind a weight generator (shared, layer, neuron, kshot)
    "build_supernet": "mosnas.engine.load",  # the supernet of a config at its seeded initialization
    "train": "mosnas.engine.train",  # train a config's supernet into its run folder (`mosnas train`)
    "load_run": "mosnas.engine.load",  # a trained run: config, space, supernet of its newest checkpoint
    "Budget": "mosnas.search.evolution",  # latency / parameter / FLOPs / memory limits with their cost functions
    "evolutionary_search": "mosnas.search.evolution",  # HAT's evolution, a pure function of space and fitness
    "random_search": "mosnas.search.evolution",  # the baseline at equal evaluations
    "search_stage": "mosnas.pipeline.search",  # one budget's search of a run, recorded in search/<budget>.json
    "export_arch": "mosnas.pipeline.export",  # collapse an arch of a run into a dense model folder (`mosnas export`)
    "run": "mosnas.pipeline.run",  # the whole pipeline of a config (`mosnas run`)
}
__all__ = ["__version__", "tune_malloc", *_API]


def __getattr__(name: str):
    """A public name of the API, imported from its module on first use."""
    if name not in _API:
        raise AttributeError(f"module 'mosnas' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(_API[name]), name)
    globals()[name] = value
    return value
