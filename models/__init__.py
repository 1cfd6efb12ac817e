"""The ML core of DeepWeightFlow: architectures, weight space, canonicalization,
flow matching and zoos. Depends on torch, numpy and scipy only."""
