"""mosnas: neural architecture search for NLP Transformers with Mixture-of-Supernets."""

__version__ = "0.1.0"
