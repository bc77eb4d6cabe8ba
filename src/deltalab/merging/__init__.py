"""Merging: sparse task vectors, the shared merge step, merge to disk and the live in-memory
merge. Above `tensors`, beside `deltas`."""
