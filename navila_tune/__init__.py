"""navila_tune: a declarative launcher for chain-of-thought SFT of Llama-3 for NaVILA."""

__version__ = "0.1.0"
