"""Native PyTorch backend: train, generate and evaluate on the MindSpeed-LLM file formats.

Submodules import torch, transformers, peft and megatron-core; this package file imports nothing heavy.
"""
