import subprocess
import sys

from typer.testing import CliRunner

from scaling.cli.app import app


def _mcscale(*args):
    return subprocess.run([sys.executable, "-m", "scaling", *args], capture_output=True, text=True, timeout=120)


def test_models_table_prints_every_size():
    result = _mcscale("models", "--sizes", "100K,1M,10M,125M,1.3B,7B", "--arch", "grm", "--seq-len", "4096")
    assert result.returncode == 0, result.stderr
    for label in ("100K", "1M", "10M", "125M", "1.3B", "7B", "swla+grm", "Transformer KV/seq"):
        assert label in result.stdout


def test_models_rejects_unknown_arch_with_exit_2_and_no_traceback():
    result = _mcscale("models", "--arch", "mamba")
    assert result.returncode == 2
    assert "--arch" in result.stderr and "Traceback" not in result.stderr


def test_models_rejects_bad_segment_length():
    result = CliRunner().invoke(app, ["models", "--arch", "swla+grm", "--seq-len", "4096", "--segment-len", "300"])
    assert result.exit_code == 2
    assert "segment_len" in result.output


def test_models_refuses_a_segment_that_would_change_an_mlp_memorys_chunk():
    result = CliRunner().invoke(app, ["models", "--arch", "titans+grm", "--segment-len", "32", "--chunk-len", "64"])
    assert result.exit_code == 2
    assert "chunk_len" in result.output and "Traceback" not in result.output


def test_models_prints_the_log_read_count():
    result = _mcscale("models", "--sizes", "125M", "--arch", "swla+grm", "--seq-len", "4096", "--segment-len", "256",
                      "--segmentation", "log")
    assert result.returncode == 0, result.stderr
    assert "0.938" in result.stdout and "reads/token" in result.stdout
