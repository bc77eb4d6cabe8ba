"""The leaf schema of params.yaml: the strict `Section` base, the numeric and pair types, and the
sections several domains share (`runtime`, `matrix`, `model`, `stats`, `sampling`).

Imports nothing of deltalab. Domain sections live next to their domain (`train.params`,
`data.params`, `evaluation.params`, ...); `deltalab.config` aggregates them into `Params`.
"""
