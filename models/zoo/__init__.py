"""Datasets, batched zoo training, zoo storage and evaluation."""
