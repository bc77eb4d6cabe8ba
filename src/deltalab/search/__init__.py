"""DoTS: difficulty-balanced queries and a multi-objective search over task-vector merge scales."""
