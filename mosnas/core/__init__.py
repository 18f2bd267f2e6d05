"""The MoS idea, for any model family: search spaces and frozen `Arch` values (space.py), the weight generators
that slice (shared) or mix (layer-/neuron-wise MoS, k-shot) max-size tensors for an arch (elastic.py), and the
supernet that runs a family's dense model with the generated weights and collapses them on export (supernet.py).
It imports nothing of mosnas but its errors and config types."""
