"""The MindSpeed-LLM 2.3.0 backend (Ascend NPUs)."""

from navila_tune.backends.mindspeed.render import MindSpeedBackend

__all__ = ["MindSpeedBackend"]
