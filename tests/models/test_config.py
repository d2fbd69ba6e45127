import pytest

from scaling.errors import UserInputError
from scaling.models import ModelConfig
from scaling.models.architectures import parse_architecture


@pytest.mark.parametrize("fields, bad_field", [
    (dict(mixer="mamba"), "mixer"),
    (dict(mixer="swla", caching="ssc", segment_len=16, top_k=0), "top_k"),
    (dict(mixer="swla", caching="grm", segment_len=48, seq_len=512), "segment_len"),
    (dict(mixer="attention", caching="grm", segment_len=64), "caching"),
    (dict(mixer="linear", memory="mlp"), "memory"),
    (dict(mixer="swla", caching="gated"), "caching"),
    (dict(d_model=30, n_heads=4), "n_heads"),
    (dict(mixer="swla", segment_mode="parallel"), "segment_mode"),
    (dict(mixer="titans", caching="grm", segment_len=64, chunk_len=48), "chunk_len"),
    (dict(mixer="dla", caching="ssc", segment_len=16, chunk_len=64), "chunk_len"),
    (dict(mixer="swla", caching="grm", segmentation="log", segment_len=1024, seq_len=512), "segment_len"),
    (dict(n_layers=0), "n_layers"),
])
def test_invalid_configs_name_the_field(fields, bad_field):
    with pytest.raises(UserInputError) as err:
        ModelConfig(**fields)
    assert err.value.field == bad_field
    assert "Fix:" in str(err.value)


def test_segment_bounds_constant_and_log():
    cfg = ModelConfig(mixer="swla", caching="grm", segment_len=64, seq_len=512)
    assert cfg.segment_bounds() == list(range(0, 513, 64))
    log = cfg.replace(segmentation="log")
    assert log.segment_bounds() == [0, 256, 384, 448, 512]  # 256, 128, 64, 64: oldest coarsest
    assert ModelConfig(mixer="swla", seq_len=512).segment_bounds() == [0, 512]
    assert cfg.segment_bounds(100) == [0, 64, 100]  # a shorter input: the last segment is partial


def test_default_memory_and_chunk():
    assert ModelConfig(mixer="titans").memory == "mlp"
    assert ModelConfig(mixer="dla").memory == "mlp"  # deep linear attention is a deep memory
    # A matrix memory's scan block shrinks to fit the segments (exact); an MLP memory's never does.
    assert ModelConfig(mixer="swla", caching="grm", segment_len=16, chunk_len=64).scan_chunk_len == 16
    assert ModelConfig(mixer="swla", caching="grm", segment_len=48, seq_len=96, chunk_len=32).scan_chunk_len == 16
    assert ModelConfig(mixer="titans", caching="grm", segment_len=128, chunk_len=64).scan_chunk_len == 64
    assert ModelConfig(mixer="titans", chunk_len=64, seq_len=32).scan_chunk_len == 64


@pytest.mark.parametrize("name, expected", [
    ("grm", ("swla", "matrix", "grm")),
    ("transformer", ("attention", "kv", "none")),
    ("dla-mlp+soup", ("dla", "mlp", "soup")),
    ("dla+grm", ("dla", "mlp", "grm")),
    ("dla-matrix+grm", ("dla", "matrix", "grm")),
    ("Titans+SSC", ("titans", "mlp", "ssc")),
])
def test_parse_architecture(name, expected):
    arch = parse_architecture(name)
    assert (arch.mixer, arch.memory, arch.caching) == expected


@pytest.mark.parametrize("name", ["mamba", "swla+gated", "transformer+grm"])
def test_parse_architecture_rejects(name):
    with pytest.raises(UserInputError):
        parse_architecture(name)


@pytest.mark.parametrize("name, canonical", [("dla-mlp+grm", "dla+grm"), ("attention", "transformer"),
                                             ("DLA-Matrix", "dla-matrix"), ("ssc", "swla+ssc")])
def test_architecture_names_are_canonical(name, canonical):
    assert parse_architecture(name).name == canonical
