"""deltalab: a declarative, DVC-tracked experiment repository for post-training research."""

__version__ = "0.1.0"
