"""Cached read of a 2-layer MLP memory (grm and residual by dense gates, ssc by index)."""
