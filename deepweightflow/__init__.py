"""DeepWeightFlow for users: the `dwf` command line (deepweightflow.cli)."""
