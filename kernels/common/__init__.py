"""Pieces every cached-read op shares: segment tables, dispatch, activations, Triton helpers."""
