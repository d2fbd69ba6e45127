"""Cached read of a matrix memory: gated (grm/soup/residual) and SSC (top-k by index)."""
