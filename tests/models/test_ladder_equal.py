"""Equal sizes in the ladder (issue 21): every series of a rung lands within 10% of the rung's target
wherever the (width multiple of head_dim, layers >= 2) grid allows, and counts stay exact."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from scaling.models.config import ModelConfig
from scaling.models.ladder import EQUAL_SIZE_BAND, count_params, format_count, shape_for_params
from scaling.models.model import LanguageModel
from scaling.spec import StudySpec, load_spec
from scaling.study.plan import model_at, series_models

STUDIES = Path(__file__).resolve().parents[2] / "studies"


def _grid(target: float, base: ModelConfig, head_dim: int) -> list[tuple[int, int, int]]:
    """Every (params_nonembed, d_model, n_layers) of the grid up to twice the target, counted by brute force."""
    out = []
    width = head_dim
    while True:
        one = count_params(base.replace(d_model=width, n_heads=width // head_dim, n_layers=1, mlp_hidden=0))
        per_layer = one["params_nonembed"] - width
        if 2 * per_layer + width > 2 * target:
            return out
        layers = 2
        while layers * per_layer + width <= 2 * target:
            out.append((layers * per_layer + width, width, layers))
            layers += 1
        width += head_dim


def _in_band(params: float, target: float) -> bool:
    return abs(params / target - 1) <= EQUAL_SIZE_BAND


def _rungs(spec: StudySpec) -> list[tuple[str, float, ModelConfig]]:
    return [(series, size, model_at(spec, size, m.base)) for series, m in series_models(spec).items()
            for size in spec.ladder.sizes]


def test_quickstart_series_are_within_ten_percent_except_where_the_grid_has_no_such_shape():
    spec = load_spec(STUDIES / "quickstart.yaml")
    outside = []
    for series, size, cfg in _rungs(spec):
        params = count_params(cfg)["params_nonembed"]
        if not _in_band(params, size):
            outside.append((series, format_count(size)))
            # the documented exception: no shape of the grid is within the band for this series
            base = series_models(spec)[series].base
            assert not any(_in_band(p, size) for p, _, _ in _grid(size, base, spec.ladder.head_dim)), (series, size)
    # At head dim 8 the 3K rung of every MC series had 2 x 8 (2.29K, -24%) or 3 x 8 (3.43K, +14%); the
    # quickstart's head dim 4 leaves no exception.
    assert outside == []


def test_quickstart_mc_series_share_their_base_memorys_shape_at_every_rung():
    """Same shape, so under one seed swla and swla+grm start from identical shared weights (paired)."""
    spec = load_spec(STUDIES / "quickstart.yaml")
    shapes = {(series, size): (cfg.n_layers, cfg.d_model) for series, size, cfg in _rungs(spec)}
    for (series, size), shape in shapes.items():
        if "+" in series:
            assert shape == shapes[("swla", size)], (series, size)


def test_paper_ladder_series_are_within_ten_percent_and_explicit_shapes_stay_as_given():
    spec = load_spec(STUDIES / "paper-ladder.yaml")
    explicit = {s.size: (s.n_layers, s.d_model) for s in spec.ladder.shapes}
    assert set(explicit) == {760e6, 1.3e9}
    for series, size, cfg in _rungs(spec):
        if size in explicit:  # the paper's shapes, kept as written (760M: 24 x 1536, 1.3B: 18 x 2048)
            assert (cfg.n_layers, cfg.d_model) == explicit[size]
        else:
            assert _in_band(count_params(cfg)["params_nonembed"], size), (series, size, cfg.n_layers, cfg.d_model)


@pytest.mark.parametrize("arch", [dict(mixer="attention", memory="kv"),
                                  dict(mixer="swla", memory="matrix", caching="grm", segment_len=32)])
@pytest.mark.parametrize("target", [3e3, 6e3, 12e3, 24e3, 48e3, 100e3])
@pytest.mark.parametrize("aspect, aspect_weight", [(16.0, 0.2), (4.0, 0.05), (16.0, 2.0)])
def test_the_rung_is_the_best_score_in_the_band_else_no_band_shape_exists(arch, target, aspect, aspect_weight):
    """Brute force over the whole grid: the search's shortcut (the score's kinks and the band's ends
    per width) must find the same shape as trying every layer count."""
    head_dim = 8
    base = ModelConfig(vocab_size=256, seq_len=256, d_model=head_dim, n_heads=1, **arch)
    rung = shape_for_params(target, base, head_dim, aspect, aspect_weight)

    def score(p: int, w: int, n: int) -> float:
        return abs(math.log(p / target)) + aspect_weight * abs(math.log((w / n) / aspect))

    band = [c for c in _grid(target, base, head_dim) if _in_band(c[0], target)]
    if band:
        best = min(score(*c) for c in band)
        chosen = (rung.params_nonembed, rung.config.d_model, rung.config.n_layers)
        assert chosen in band and score(*chosen) == pytest.approx(best, abs=1e-12)
    else:
        assert not _in_band(rung.params_nonembed, target)


def test_a_rung_the_grid_cannot_put_in_the_band_falls_back_to_the_score_alone():
    base = ModelConfig(vocab_size=256, seq_len=256, d_model=8, n_heads=1, mixer="swla", memory="matrix",
                       caching="grm", segment_len=32)
    rung = shape_for_params(3e3, base, head_dim=8, aspect=16.0, aspect_weight=0.2)
    assert (rung.config.n_layers, rung.config.d_model, rung.params_nonembed) == (3, 8, 3428)


def test_the_band_moves_a_rung_the_score_alone_put_far_off_target():
    """The quickstart's 6K rung: the score alone built SWLA at 2 x 16 = 8.49K (+41%)."""
    base = ModelConfig(vocab_size=256, seq_len=256, d_model=8, n_heads=1, mixer="swla", memory="matrix")
    rung = shape_for_params(6e3, base, head_dim=8, aspect=16.0, aspect_weight=0.2)
    assert _in_band(rung.params_nonembed, 6e3) and (rung.config.n_layers, rung.config.d_model) == (6, 8)


def test_quickstart_rungs_count_exactly():
    spec = load_spec(STUDIES / "quickstart.yaml")
    for series, size, cfg in _rungs(spec):
        with torch.device("meta"):
            model = LanguageModel(cfg)
        assert count_params(cfg)["params_total"] == sum(p.numel() for p in model.parameters()), (series, size)
