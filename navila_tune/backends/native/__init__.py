"""The native backend: every stage runs ``python -m navila_tune.backends.native.run JOB`` (PyTorch)."""

from navila_tune.backends.native.render import NativeBackend

__all__ = ["NativeBackend"]
