"""`seeds_at`: extra seeds at chosen rungs (issue 21), so seed noise is measured from real seeds where
the comparison leans on it without repeating the whole ladder."""

from __future__ import annotations

import copy

import pytest
import yaml

from scaling.errors import UserInputError
from scaling.spec import parse_spec
from scaling.study.identity import claim
from scaling.study.plan import plan_ladder
from tests.study.test_identity import _record, _spec

BASE = {"name": "seeds", "data": {"seq_len": 64, "evals": {"every_steps": 10, "val_windows": 2}},
        "architectures": [{"name": "transformer"}, {"name": "swla+grm", "segment_lens": [32]}],
        "ladder": {"sizes": ["8K", "16K", "32K"], "head_dim": 8, "aspect": 16, "aspect_weight": 0.2},
        "budget": {"tokens_per_param": 3}, "optimizer": {"batch_tokens": 256}, "seeds": [0, 7]}


def _with(**extra) -> dict:
    raw = copy.deepcopy(BASE)
    raw.update(extra)
    return raw


def test_sizes_are_read_like_ladder_sizes_and_default_to_none():
    assert parse_spec(_with()).seeds_at == {}
    spec = parse_spec(_with(seeds_at={"32K": [0, 1, 2], 16000: [5], "8e3": [3]}))
    assert spec.seeds_at == {32e3: [0, 1, 2], 16e3: [5], 8e3: [3]}


def test_a_listed_rung_trains_the_union_of_seeds_and_its_extra_seeds_each_once():
    spec = parse_spec(_with(seeds_at={"32K": [0, 1, 2]}))  # 0 is already among `seeds`
    trials = plan_ladder(spec)
    by_rung: dict[tuple[str, str], list[int]] = {}
    for t in trials:
        by_rung.setdefault((t.series, t.size_label), []).append(t.seed)
    for series in ("transformer", "swla+grm@C32"):
        assert by_rung[(series, "8K")] == [0, 7] and by_rung[(series, "16K")] == [0, 7]
        assert by_rung[(series, "32K")] == [0, 7, 1, 2]
    assert len(trials) == 2 * (2 + 2 + 4)
    ids = [t.trial_id for t in trials]
    assert len(set(ids)) == len(ids) and "ladder-transformer-cna-32k-s2" in ids
    extra = next(t for t in trials if t.trial_id == "ladder-swla_grm-c32-32k-s1")
    first = next(t for t in trials if t.trial_id == "ladder-swla_grm-c32-32k-s0")
    assert extra.config.seed == 1 and extra.tags["seed"] == "1"
    assert extra.config.model == first.config.model and extra.config.lr == first.config.lr  # same rung, other seed


def test_extra_seeds_leave_every_other_trial_as_it_was():
    plain = {t.trial_id: t.config_hash for t in plan_ladder(parse_spec(_with()))}
    extended = {t.trial_id: t.config_hash for t in plan_ladder(parse_spec(_with(seeds_at={"16K": [3]})))}
    assert set(extended) - set(plain) == {"ladder-transformer-cna-16k-s3", "ladder-swla_grm-c32-16k-s3"}
    assert all(extended[k] == v for k, v in plain.items())


@pytest.mark.parametrize("seeds_at, words", [
    ({"64K": [1]}, "64K is not one of ladder.sizes"),
    ({"32K": [-1]}, "seed -1"),
    ({"32K": [1, 1]}, "seed 1 is listed twice"),
    ({"32K": [1], 32000: [2]}, "size 32K is listed twice"),
    ({"32K": []}, "non-empty list of seeds"),
    ({"32K": 1}, "non-empty list of seeds"),
    ({"32K": ["a"]}, "not a whole number"),
    ({"32K": [True]}, "not a whole number"),
    ({"32K": [2**32]}, "seed 4294967296"),
    ({"32Q": [1]}, "cannot read size"),
    ({"0": [1]}, "not positive"),
    ([1, 2], "mapping of ladder size to seeds"),
])
def test_bad_seeds_at_is_a_user_error_naming_the_field(seeds_at, words):
    with pytest.raises(UserInputError) as err:
        parse_spec(_with(seeds_at=seeds_at))
    assert err.value.field.startswith("seeds_at") and words in str(err.value), str(err.value)


def test_extend_takes_added_seeds_like_added_trials_and_refuses_removed_ones(tmp_path):
    raw = _spec("more-seeds", str(tmp_path / "runs"))  # ladder sizes [20K], seeds [0]
    store = _record(raw)
    grown = copy.deepcopy(raw)
    grown["seeds_at"] = {"20K": [1, 2]}
    with pytest.raises(UserInputError) as err:  # without --extend: a different spec
        claim(store, parse_spec(grown), yaml.safe_dump(grown))
    assert "seeds_at" in str(err.value)
    claim(store, parse_spec(grown), yaml.safe_dump(grown), extend=True)
    assert parse_spec(yaml.safe_load(store.read_text("spec.yaml"))).seeds_at == {20e3: [1, 2]}

    more = copy.deepcopy(grown)
    more["seeds_at"] = {"20K": [1, 2, 3]}
    claim(store, parse_spec(more), yaml.safe_dump(more), extend=True)  # a rung may gain more seeds

    fewer = copy.deepcopy(more)
    fewer["seeds_at"] = {"20K": [1]}
    with pytest.raises(UserInputError) as err:
        claim(store, parse_spec(fewer), yaml.safe_dump(fewer), extend=True)
    assert err.value.field == "--extend" and "seeds_at: entries were changed or removed" in str(err.value)


def test_seeds_at_needs_a_ladder():
    raw = {"name": "recall-only", "seeds_at": {"1K": [1]},
           "recall": {"architectures": [{"name": "transformer"}], "widths": [16], "seq_lens": [32],
                      "mqar": {"n_pairs": 4, "key_vocab": 8, "value_vocab": 8}, "steps": 10}}
    with pytest.raises(UserInputError) as err:
        parse_spec(raw)
    assert err.value.field == "seeds_at" and "no ladder" in str(err.value)
    raw.pop("seeds_at")
    assert parse_spec(raw).seeds_at == {}  # the same spec without it is valid
