"""Backends turn stage specs into steps: MindSpeed-LLM commands, or the native PyTorch stage runner."""
