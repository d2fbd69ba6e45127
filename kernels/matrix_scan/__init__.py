"""The matrix memories' base scan (linear, SWLA, dla-matrix) over segments, on flash-linear-attention.

`segmented_scan(...)` runs S_t = a_t S_{t-1} + sum_w beta_{t,w} v_{t,w} k_{t,w}^T with reads
o_t = S_t q_t and returns every token's read plus each segment's final state (the cache).
`scan_backend(device)` says which implementation a device gets: fla's `chunk_simple_gla` on CUDA,
`None` elsewhere (then `scaling.models.memory.MatrixMemory` runs its PyTorch chunked scan, the
CPU and meta-device reference). `reference.simple_gla` is a token-by-token PyTorch twin of fla's
function (same signature and layout) that lets the CPU tests run this adapter end to end.
"""

from kernels.matrix_scan.op import scan_backend, segmented_scan

__all__ = ["scan_backend", "segmented_scan"]
