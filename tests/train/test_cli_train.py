import subprocess
import sys


def _mcscale(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "scaling", *args], capture_output=True, text=True, timeout=timeout)


def test_train_runs_and_prints_a_summary(tmp_path):
    result = _mcscale("train", "--arch", "swla+grm", "--size", "100K", "--seq-len", "128", "--tokens", "40K",
                      "--batch-tokens", "1024", "--segment-len", "32", "--eval-every", "20", "--threads", "1",
                      "--mqar-pairs", "4", "--needle-lengths", "128", "--checkpoint-dir", str(tmp_path / "ck"))
    assert result.returncode == 0, result.stderr[-2000:]
    for word in ("completed", "val_loss", "val_bpb", "mqar_acc", "needle_acc_128", "tokens_per_second"):
        assert word in result.stdout
    assert (tmp_path / "ck" / "trial.pt").exists()


def test_train_missing_corpus_is_a_clear_error():
    result = _mcscale("train", "--size", "100K", "--seq-len", "128", "--tokens", "10K", "--data", "/nonexistent/*.txt")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr and "Fix" in result.stderr


def test_train_needle_longer_than_seq_len_is_a_clear_error():
    result = _mcscale("train", "--size", "100K", "--seq-len", "128", "--tokens", "10K", "--needle-lengths", "1K")
    assert result.returncode == 2
    assert "needle" in result.stderr and "Traceback" not in result.stderr
