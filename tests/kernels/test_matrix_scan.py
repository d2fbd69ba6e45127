"""The matrix memories' fla scan adapter (kernels/matrix_scan) against the PyTorch chunked scan.

fla's Triton kernels cannot run in Triton's CPU interpreter, so here the adapter drives
`reference.simple_gla`, a token-by-token twin of fla's `chunk_simple_gla` (same layout, state
layout and `cu_seqlens` semantics): what is tested on CPU is everything mcscale adds around fla -
the stream stacking, the per-segment sequences (batch rows or `cu_seqlens`), the carry across
segments, the state layout and the hand-off of reads and states to Memory Caching. fla's own
numerics are compared with the reference on the GPU check (benchmarks/gpu_check.py).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import scaling.models.memory as memory_module
from kernels.matrix_scan import scan_backend, segmented_scan
from kernels.matrix_scan.reference import simple_gla
from scaling.models import LanguageModel
from scaling.models.memory import MatrixMemory, MemoryInputs, SegmentPlan
from tests.models.conftest import small_config


def _inputs(b: int = 2, h: int = 2, length: int = 24, w: int = 2, d: int = 4, seed: int = 0) -> MemoryInputs:
    gen = torch.Generator().manual_seed(seed)
    rand = lambda *shape: torch.randn(*shape, generator=gen, dtype=torch.float64)  # noqa: E731
    return MemoryInputs(q=F.normalize(rand(b, h, length, d), dim=-1), k=F.normalize(rand(b, h, length, w, d), dim=-1),
                        v=rand(b, h, length, w, d), write_gate=torch.sigmoid(rand(b, h, length, w)),
                        log_retention=F.logsigmoid(rand(b, h, length) + 2.0))


@pytest.mark.parametrize("bounds", [(0, 8, 16, 24), (0, 4, 12, 24)], ids=["equal", "unequal"])
@pytest.mark.parametrize("independent", [False, True], ids=["continuous", "independent"])
@pytest.mark.parametrize("streams", [1, 2])
def test_adapter_matches_the_chunked_scan_reads_states_and_gradients(bounds, independent, streams):
    inp = _inputs(w=streams)
    leaves = [inp.q, inp.k, inp.v, inp.write_gate, inp.log_retention]
    for t in leaves:
        t.requires_grad_(True)
    plan = SegmentPlan(seq_len=24, chunk_len=4, bounds=bounds, independent=independent)
    memory = MatrixMemory(4)
    (ref_states,), ctx = memory.reference_scan(inp, plan)
    ref_reads = memory.online_layer(ctx, inp.q, 0)
    reads, states = segmented_scan(inp.q, inp.k, inp.v, inp.write_gate, inp.log_retention, bounds, independent,
                                   simple_gla)
    assert reads.shape == ref_reads.shape and states.shape == ref_states.shape
    torch.testing.assert_close(reads, ref_reads)
    torch.testing.assert_close(states, ref_states)
    # the cached states receive gradient too (MC reads them): weigh both in one loss
    probe_r, probe_s = torch.randn_like(reads), torch.randn_like(states)
    want = torch.autograd.grad((ref_reads * probe_r).sum() + (ref_states * probe_s).sum(), leaves)
    got = torch.autograd.grad((reads * probe_r).sum() + (states * probe_s).sum(), leaves)
    for name, g_ref, g in zip(["q", "k", "v", "write_gate", "log_retention"], want, got):
        torch.testing.assert_close(g, g_ref, msg=lambda m, n=name: f"{n}: {m}")


def test_cpu_tensors_use_the_reference_scan():
    assert scan_backend(torch.device("cpu")) is None
    assert scan_backend(torch.device("meta")) is None


@pytest.mark.parametrize("strategy", ["none", "residual", "grm", "soup", "ssc"])
def test_a_model_on_the_fla_path_equals_the_reference_model(monkeypatch, strategy):
    """The whole dispatch: MatrixMemory.scan hands the adapter's reads and states to every caching
    strategy (soup reads the online memory through `online_layer` with the queries)."""
    cfg = small_config("swla", "matrix", strategy, seq_len=32)
    model = LanguageModel(cfg).double()
    tokens = torch.randint(0, cfg.vocab_size, (2, 32))
    reference = model(tokens)
    ref_grads = torch.autograd.grad(reference.square().mean(), list(model.parameters()), allow_unused=True)
    monkeypatch.setattr(memory_module, "scan_backend", lambda device: simple_gla)
    through_adapter = model(tokens)
    grads = torch.autograd.grad(through_adapter.square().mean(), list(model.parameters()), allow_unused=True)
    torch.testing.assert_close(through_adapter, reference)
    for g, g_ref in zip(grads, ref_grads):
        if g_ref is not None:
            torch.testing.assert_close(g, g_ref)


def test_the_fla_path_refuses_to_read_with_other_inputs(monkeypatch):
    monkeypatch.setattr(memory_module, "scan_backend", lambda device: simple_gla)
    inp = _inputs()
    plan = SegmentPlan(seq_len=24, chunk_len=4, bounds=(0, 8, 16, 24), independent=False)
    memory = MatrixMemory(4)
    _, ctx = memory.scan(inp, plan)
    assert memory.online_layer(ctx, inp.q, 0) is ctx["reads"]
    with pytest.raises(RuntimeError, match="own queries"):
        memory.online_layer(ctx, inp.q.clone(), 0)


def test_under_autocast_fla_receives_the_autocast_dtype_and_fp32_decays():
    """As the cached reads: q, k and beta*v enter fla in bf16 under bf16 autocast (fla accumulates in
    fp32), the log decays stay fp32, and the reads come back in q's dtype."""
    seen: dict[str, torch.dtype] = {}

    def recording(q, k, v, g, **kwargs):
        seen.update(q=q.dtype, k=k.dtype, v=v.dtype, g=g.dtype)
        return simple_gla(q, k, v, g, **kwargs)

    inp = _inputs()
    inp = MemoryInputs(**{f: getattr(inp, f).float() for f in ("q", "k", "v", "write_gate", "log_retention")})
    with torch.autocast("cpu", dtype=torch.bfloat16):
        reads, states = segmented_scan(inp.q, inp.k, inp.v, inp.write_gate, inp.log_retention, (0, 8, 16, 24),
                                       False, recording)
    assert seen == {"q": torch.bfloat16, "k": torch.bfloat16, "v": torch.bfloat16, "g": torch.float32}
    assert reads.dtype == torch.float32 and states.dtype == torch.float32
