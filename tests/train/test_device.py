"""Device, precision, compile and throughput of a trial on this CPU (the memory estimate: test_memory_estimate.py)."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from scaling.data.corpus import CorpusSpec
from scaling.errors import UserInputError
from scaling.models import LanguageModel, ModelConfig
from scaling.train import TrialConfig, run_trial
from scaling.train.checkpoint import CHECKPOINT_FILE
from scaling.train.device import resolve_device
from scaling.train.throughput import mfu, peak_flops

CORPUS = CorpusSpec(max_bytes=300_000)


def tiny(mixer: str = "attention", caching: str = "none", **extra) -> ModelConfig:
    fields = dict(vocab_size=256, d_model=32, n_heads=2, n_layers=2, mixer=mixer, caching=caching, seq_len=64,
                  chunk_len=16)
    if caching != "none":
        fields["segment_len"] = 16
    fields.update(extra)
    return ModelConfig(**fields)


def test_auto_is_the_cpu_without_a_gpu_and_cuda_without_one_is_a_clear_error():
    assert resolve_device("auto") == torch.device("cpu") == resolve_device("cpu")
    with pytest.raises(UserInputError) as err:
        resolve_device("cuda")
    assert err.value.field == "device"


def test_mcscale_train_refuses_cuda_without_a_gpu_with_exit_2():
    result = subprocess.run([sys.executable, "-m", "scaling", "train", "--arch", "transformer", "--size", "100K",
                             "--seq-len", "64", "--tokens", "1K", "--batch-tokens", "512", "--device", "cuda"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "device" in result.stderr and "no GPU" in result.stderr


def test_checkpoints_hold_cpu_tensors_so_any_device_can_resume_them(tmp_path):
    config = TrialConfig(model=tiny(), corpus=CORPUS, tokens=4 * 512, batch_tokens=512, eval_every_steps=2,
                         eval_windows=1, threads=1, checkpoint_dir=str(tmp_path))
    run_trial(config)
    state = torch.load(tmp_path / CHECKPOINT_FILE, weights_only=False)  # no map_location: as saved
    tensors = [v for v in state["model"].values()] + [
        t for s in state["optimizer"]["state"].values() for t in s.values() if isinstance(t, torch.Tensor)]
    assert tensors and {t.device.type for t in tensors} == {"cpu"}
    assert set(state["model"]) == set(LanguageModel(config.model).state_dict())  # plain parameter names


def test_compiled_training_matches_eager_training():
    common = dict(model=tiny(), corpus=CORPUS, tokens=6 * 512, batch_tokens=512, eval_every_steps=6,
                  eval_windows=2, threads=2, seed=4)
    eager = run_trial(TrialConfig(compile=False, **common)).metrics
    compiled = run_trial(TrialConfig(compile=True, **common)).metrics
    assert compiled["compiled"] == 1 and compiled["compile_failed"] == 0 and eager["compiled"] == 0
    assert compiled["val_loss"] == pytest.approx(eager["val_loss"], abs=1e-4)


def test_every_report_carries_throughput_mfu_and_peak_memory():
    reports = []
    config = TrialConfig(model=tiny("swla", "grm"), corpus=CORPUS, tokens=4 * 512, batch_tokens=512,
                         eval_every_steps=2, eval_windows=1, threads=1, peak_flops_per_second=1e9)
    run_trial(config, reporter=lambda m, _: reports.append(m))
    assert len(reports) == 2
    for m in reports:
        assert m["tokens_per_second"] > 0 and m["flops_per_second"] == pytest.approx(
            m["tokens_per_second"] * m["flops_per_token"])
        assert m["mfu"] == pytest.approx(m["flops_per_second"] / 1e9)
        assert m["device_memory_peak_bytes"] > 10 * 2 ** 20 and m["checkpoint_seconds"] == 0.0
        assert m["device"].startswith("cpu") and m["precision"] == "fp32" and m["workers"] == 1


@pytest.mark.parametrize("name, precision, expected", [
    ("NVIDIA H100 80GB HBM3", "bf16", 989e12), ("NVIDIA H100 PCIe", "bf16", 756e12),
    ("NVIDIA H200", "bf16", 989e12), ("NVIDIA A100-SXM4-80GB", "fp32", 156e12), ("Tesla V100-SXM2-32GB", "bf16", 0.0),
    ("cpu (2 cores)", "bf16", 0.0),
])
def test_device_peaks_come_from_the_table(name, precision, expected):
    assert peak_flops(name, precision) == expected
    assert mfu(1e12, peak_flops(name, precision)) == (1e12 / expected if expected else 0.0)
