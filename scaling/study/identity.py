"""A study is one thing: one name at one storage location, with one spec, recorded in spec.yaml.

Why: a run of a *changed* spec under an existing name used to reuse the old trials silently
(seq_len 256 -> 128 kept the 256 results) and overwrite spec.yaml, so results and the spec that
claims to describe them drifted apart. Now, when a study is started (`mcscale run SPEC`):

* no recorded spec: a new study; the spec's text becomes its spec.yaml;
* the same spec (same content once parsed: formatting, comments, defaults spelt out or not do not
  matter; `storage` / `s3_endpoint` are where the study was found, so they are not compared): the
  study continues; spec.yaml is kept as recorded;
* a different spec: refused (exit 2) with the differing fields (``data.seq_len: 256 -> 128``),
  unless the user names a new study (another `name`) or passes ``--extend``.

``--extend`` (what it allows): the new spec may only *add* trials - architectures, segment
lengths, ladder sizes, seeds, a rung's extra seeds (`seeds_at`) - and change what does not touch
results (`description`, `concurrency`, `fit`). Every trial the study already recorded must be planned again with the same
config hash (identical training settings); anything else (another seq_len, budget, optimiser,
tune block, tracking URI, a removed size...) is refused, because changed settings of an existing
trial must never reuse its old result. An accepted extension replaces spec.yaml (keeping the
previous text as spec-<n>.yaml) so the recorded spec describes every trial of the study.
"""

from __future__ import annotations

from typing import Any

from scaling.errors import UserInputError
from scaling.redact import redact_uri
from scaling.spec import StudySpec

LOCATION_FIELDS = ("storage", "s3_endpoint")  # where the study was found; not part of its content
EXTEND_FREE = ("description", "concurrency", "fit")  # may change under --extend: no trial depends on them
EXTEND_GROWS = ("architectures", "ladder.sizes", "seeds", "seeds_at")  # may gain entries under --extend
SPEC_FILE = "spec.yaml"


def _content(spec: StudySpec) -> dict[str, Any]:
    data = spec.model_dump(mode="json")
    for name in LOCATION_FIELDS:
        data.pop(name, None)
    return data


def _show(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    text = str(redact_uri(value) if isinstance(value, str) else value)
    return text if len(text) <= 60 else text[:57] + "..."


def differences(recorded: StudySpec, new: StudySpec) -> list[tuple[str, Any, Any]]:
    """(field path, recorded value, new value) for every leaf where the two specs differ."""
    out: list[tuple[str, Any, Any]] = []

    def walk(path: str, a: Any, b: Any) -> None:
        if isinstance(a, dict) and isinstance(b, dict):
            for key in sorted(set(a) | set(b), key=str):
                walk(f"{path}.{key}" if path else str(key), a.get(key), b.get(key))
        elif a != b:
            out.append((path, a, b))

    walk("", _content(recorded), _content(new))
    return out


def describe(diffs: list[tuple[str, Any, Any]], limit: int = 8) -> str:
    shown = [f"{path}: {_show(a)} -> {_show(b)}" for path, a, b in diffs[:limit]]
    more = f" (and {len(diffs) - limit} more)" if len(diffs) > limit else ""
    return "; ".join(shown) + more


def _grows(path: str, old: Any, new: Any) -> bool:
    """Whether `new` keeps every entry of `old` (in order-insensitive terms) and adds some."""
    if path == "seeds_at":  # {size: [seeds]}: a rung may gain seeds, and rungs may be added
        return (isinstance(old, dict) and isinstance(new, dict)
                and all(size in new and all(s in new[size] for s in seeds) for size, seeds in old.items()))
    if not isinstance(old, list) or not isinstance(new, list):
        return False
    if path == "architectures":  # an architecture may also gain segment lengths
        by_name = {a["name"]: a for a in new}
        for a in old:
            b = by_name.get(a["name"])
            if b is None:
                return False
            rest_a = {k: v for k, v in a.items() if k != "segment_lens"}
            rest_b = {k: v for k, v in b.items() if k != "segment_lens"}
            if rest_a != rest_b or not all(c in b["segment_lens"] for c in a["segment_lens"]):
                return False
        return True
    return all(item in new for item in old)


def _extension_problems(recorded: StudySpec, new: StudySpec) -> list[str]:
    old_data, new_data = _content(recorded), _content(new)
    problems = []
    for path, a, b in differences(recorded, new):
        top = path.split(".")[0]
        grown = next((g for g in EXTEND_GROWS if path == g or path.startswith(g + ".")), None)
        if top in EXTEND_FREE:
            continue
        if grown is not None:
            continue  # checked as a whole list below
        problems.append(f"{path}: {_show(a)} -> {_show(b)}")
    for path in EXTEND_GROWS:
        node_a, node_b = old_data, new_data
        for part in path.split("."):
            node_a, node_b = node_a.get(part), node_b.get(part)
        if node_a != node_b and not _grows(path, node_a, node_b):
            problems.append(f"{path}: entries were changed or removed, not only added")
    return problems


def _changed_trials(store: Any, new: StudySpec) -> list[str]:
    """Recorded trials that the new spec would plan with other settings (or not at all)."""
    from scaling.study.plan import plan_ladder

    table = store.read_trials()
    if table.empty:
        return []
    recorded = dict(zip(table["trial_id"], table["config_hash"]))
    recorded = {k: v for k, v in recorded.items() if str(k).startswith("ladder-")}
    planned = {p.trial_id: p.config_hash for p in plan_ladder(new, store.read_json("tuned.json"))}
    return sorted(k for k, digest in recorded.items() if planned.get(k) != digest)


def claim(store: Any, spec: StudySpec, spec_text: str | None, extend: bool = False) -> None:
    """Make sure `spec` is the study recorded at `store` (or may extend it); record it when new.

    Raises UserInputError (exit 2) for a different spec; writes nothing then.
    """
    from scaling.spec import parse_spec

    import yaml

    text = store.read_text(SPEC_FILE)
    if text is None:
        if spec_text is not None:
            store.write_text(SPEC_FILE, spec_text)
        return
    try:
        recorded = parse_spec(yaml.safe_load(text), source=f"{store.root}/{SPEC_FILE}")
    except yaml.YAMLError:
        raise UserInputError(f"{store.root}/{SPEC_FILE}", "the recorded spec is not valid YAML",
                             "restore it from your copy of the spec (nothing was changed)") from None
    diffs = differences(recorded, spec)
    if not diffs:
        return
    where = f"{store.root}"
    if not extend:
        raise UserInputError("SPEC", f"study {spec.name!r} at {where} was recorded with another spec: {describe(diffs)}",
                             "run it with the recorded spec (`mcscale resume " + spec.name + "`), give the changed "
                             "spec a new `name` (a new study), or pass --extend if it only adds architectures, "
                             "segment lengths, sizes or seeds")
    problems = _extension_problems(recorded, spec)
    if not problems:
        changed = _changed_trials(store, spec)
        if changed:
            problems.append(f"recorded trials would train differently or be dropped: {', '.join(changed[:4])}"
                            + (f" (and {len(changed) - 4} more)" if len(changed) > 4 else ""))
    if problems:
        raise UserInputError("--extend", f"the spec does more than extend study {spec.name!r} at {where}: "
                             + "; ".join(problems[:6]),
                             "--extend may only add architectures, segment lengths, ladder sizes and seeds (and "
                             "change description, concurrency or fit); give the changed spec a new `name` instead")
    if spec_text is not None:
        n = 1
        while store.read_text(f"spec-{n}.yaml") is not None:
            n += 1
        store.write_text(f"spec-{n}.yaml", text)
        store.write_text(SPEC_FILE, spec_text)


def check_resume(store: Any, name: str, spec: StudySpec) -> None:
    """`mcscale resume NAME --storage X` reads the spec from X/NAME: it must be NAME's."""
    if spec.name != name:
        raise UserInputError("STUDY", f"{store.root}/{SPEC_FILE} is the spec of study {spec.name!r}, not {name!r}",
                             f"resume {spec.name!r} under its own name, or move the folder back to {spec.name}/")


__all__ = ["claim", "differences", "describe", "check_resume"]
