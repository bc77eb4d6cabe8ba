"""Checkpoint tensors: the safetensors format, streaming reads and writes, hub resolution,
hashing, block loops and exact top-k. The bottom layer: imports nothing of deltalab but errors."""
