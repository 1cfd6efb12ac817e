"""What crosses the boundaries between the packages, torch-free: the job request and its result
summary, the generator card, a result file's metadata and input contract, and how files are
written. `service`, `worker`, `models` and `deepweightflow` all import it; it imports none of them."""
