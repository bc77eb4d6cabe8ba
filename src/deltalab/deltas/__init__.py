"""Weight deltas in bounded memory: streaming checkpoint I/O, exact top-k, sparse task vectors,
merging and per-layer × module analysis (see docs/deltas.md).

Modules: `io` (read/write safetensors checkpoints, hub resolution), `topk` (exact top-k by
magnitude), `vectors` (sparse task vector files), `merge`, `classify` (name → layer, module),
`analysis` (statistics), `report`/`plots` (files), `params`, `cli`.
"""
