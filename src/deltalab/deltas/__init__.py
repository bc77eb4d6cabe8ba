"""Analysis of weight deltas (finetuned − base) in bounded memory (see docs/deltas.md).

Measuring: `classify` (tensor name → layer, module), `streaming` (row chunks of W and each Δ),
`accumulators` (additive sums and their update kernels), `sketch` (singular values, ranks),
`selection` (include/exclude patterns), `analysis` (the `analyze` driver, `Analysis`).
Reporting: `contrasts` (head-to-head SFT vs RL numbers), `claims` (the published claims as data),
`summary` (one traversal of an `Analysis` feeding every output), `markdown` (report.md), `plots`
(figures), `report` (writes the report directory). `params`, `cli` (`deltalab analyze`).
"""
