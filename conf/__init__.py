"""Hydra config tree, installed as the package ``navila_tune.conf``."""
