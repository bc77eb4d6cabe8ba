"""The merge methods' names, importable without torch (the CLI's choices, params validation)."""

METHOD_NAMES = (
    "task_arithmetic",
    "ties",
    "dare_linear",
    "dare_ties",
    "della",
    "della_linear",
    "breadcrumbs",
    "breadcrumbs_ties",
    "ram",
)
