"""Triton kernels, each with a PyTorch reference; dispatch by device (CPU uses the reference)."""
