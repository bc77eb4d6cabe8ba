"""Training recipes' building blocks: pretraining, SFT (TRL), dvclive logging."""
