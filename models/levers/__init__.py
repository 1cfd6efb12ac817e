"""Levers tried against the functional-novelty frontier (issue 15; `bench/novelty_levers.py`).

- `trajectory`: late-epoch checkpoints of every training run, aligned with their run's final
  permutation, as extra flow training data;
- `samplers`: candidate samplers that differ from the shipped one in one place only: residual
  noise shaped by the zoo's leave-one-out residual outside its span, or a lower sampling
  temperature.

Activation matching (align hidden units by the correlation of their activations) lives with the
other canonicalizers: `models.canon.activation_matching`.
"""
