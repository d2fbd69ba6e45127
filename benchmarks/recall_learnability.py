"""Benchmark: which MQAR setting a tiny model learns fast, and whether it separates architectures.

Trains each architecture on multi-query associative recall (`task: mqar`, the trainer's own
`run_trial`, one thread per run) for a fixed number of steps and prints, side by side in one
run, held-out MQAR accuracy, the chance levels, parameters, state/cache bytes per sequence
(`scaling.models.flops.sequence_bytes`) and seconds. This is how the recall phase's defaults
(studies/recall.yaml, studies/quickstart.yaml) were chosen: a setting is useful when the
Transformer is near perfect, the base recurrence clearly lower and Memory Caching between or
above, all after a minute or two of CPU training.

Chance (the `chance` column, the report's chance line): guessing among the sequence's values not
yet answered - every key is queried and each answer is revealed as the next input, so the i-th of
n queries is right with probability 1 / (n - i); a model learns this long before it binds keys to
values (34% for 8 pairs). `1/kv` is a random value id.

Run: ``python benchmarks/recall_learnability.py`` (the quickstart's recall setting: 6 runs, about
4-6 minutes on 2 idle cores; ``--help`` for options; ``--quick`` smoke run).
Timings depend on load: note the load average printed with the table.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from scaling.data.recall import MQARSpec  # noqa: E402
from scaling.models.architectures import parse_architecture  # noqa: E402
from scaling.models.config import ModelConfig  # noqa: E402
from scaling.models.flops import sequence_bytes  # noqa: E402
from scaling.models.ladder import count_params  # noqa: E402
from scaling.train import TrialConfig, run_trial  # noqa: E402


def model_for(arch: str, d_model: int, head_dim: int, layers: int, seq_len: int, vocab: int,
              segment_len: int | None, chunk_len: int = 8) -> ModelConfig:
    parsed = parse_architecture(arch)
    fields = dict(vocab_size=vocab, d_model=d_model, n_heads=d_model // head_dim, n_layers=layers, seq_len=seq_len,
                  chunk_len=min(chunk_len, seq_len), **parsed.config_fields())
    if parsed.caching != "none":
        fields["segment_len"] = segment_len
    return ModelConfig(**fields)


def one_run(job: dict) -> dict:
    spec = MQARSpec(n_pairs=job["pairs"], n_queries=job["queries"] or job["pairs"], key_vocab=job["kv"],
                    value_vocab=job["kv"], seq_len=job["seq_len"])
    model = model_for(job["arch"], job["d_model"], job["head_dim"], job["layers"], job["seq_len"],
                      spec.vocab_needed, job.get("segment_len"), job.get("chunk_len", 8))
    model = dataclasses.replace(model, **job["model_overrides"])
    config = TrialConfig(model=model, task="mqar", mqar=spec, tokens=job["steps"] * job["batch"] * job["seq_len"],
                         batch_tokens=job["batch"] * job["seq_len"], lr=job["lr"], weight_decay=job["wd"],
                         warmup_fraction=0.05, eval_every_steps=job.get("every") or job["steps"], mqar_eval_batch=256, threads=1,
                         seed=job["seed"], **job["overrides"])
    started = time.perf_counter()
    result = run_trial(config)
    nbytes = sequence_bytes(model)
    curve = " ".join(f"{h['mqar_acc']:.2f}" for h in result.history if "mqar_acc" in h)
    return dict(job, acc=result.metrics["mqar_acc"], curve=curve, params=count_params(model)["params_nonembed"],
                bytes=nbytes.total_bytes, seconds=time.perf_counter() - started)


def chance(pairs: int, queries: int) -> float:
    """Guessing among the values not yet answered (scaling.study.recall.chance_levels, in_context)."""
    return sum(1 / (pairs - i) for i in range(queries)) / queries


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--archs", default="transformer,swla,swla+grm")
    parser.add_argument("--widths", default="32,64")
    parser.add_argument("--head-dim", type=int, default=8)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--pairs", default="8")
    parser.add_argument("--queries", type=int, default=0, help="queries per sequence (default: every pair)")
    parser.add_argument("--kv", default="8", help="key and value vocabulary sizes (each)")
    parser.add_argument("--seq-lens", default="32")
    parser.add_argument("--segment-lens", default="8", help="C for the +MC architectures")
    parser.add_argument("--chunk-len", type=int, default=8, help="scan chunk (an MLP memory's inner mini-batch)")
    parser.add_argument("--lrs", default="0.003")
    parser.add_argument("--wd", type=float, default=0.0)
    parser.add_argument("--seeds", default="0", help="training seeds (data order and initialisation)")
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--every", type=int, default=0, help="also evaluate every N steps and print the curve")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                        help="override a TrialConfig field, e.g. --set min_lr_ratio=1 --set beta2=0.99")
    parser.add_argument("--model-set", action="append", default=[], metavar="FIELD=VALUE",
                        help="override a ModelConfig field, e.g. --model-set rope_theta=100")
    parser.add_argument("--jobs", type=int, default=2, help="runs in parallel (one thread each)")
    parser.add_argument("--quick", action="store_true", help="smoke run: 30 steps, two architectures")
    args = parser.parse_args()
    if args.quick:
        args.archs, args.steps = "transformer,swla", 30

    overrides = {k: float(v) for k, v in (item.split("=", 1) for item in args.set)}
    model_overrides = {k: float(v) for k, v in (item.split("=", 1) for item in args.model_set)}
    ints = lambda text: [int(x) for x in text.split(",")]  # noqa: E731
    jobs = []
    for arch in args.archs.split(","):
        caching = parse_architecture(arch).caching != "none"
        for seq_len in ints(args.seq_lens):
            for c in (ints(args.segment_lens) if caching else [None]):
                for width in ints(args.widths):
                    for pairs in ints(args.pairs):
                        for kv in ints(args.kv):
                            for lr in [float(x) for x in args.lrs.split(",")]:
                                for seed in ints(args.seeds):
                                    jobs.append(dict(
                                        arch=arch, seq_len=seq_len, segment_len=c, d_model=width,
                                        head_dim=args.head_dim, layers=args.layers, pairs=pairs, queries=args.queries,
                                        kv=kv, lr=lr, seed=seed, wd=args.wd, steps=args.steps, batch=args.batch,
                                        every=args.every, chunk_len=args.chunk_len, overrides=overrides,
                                        model_overrides=model_overrides))
    load_before = os.getloadavg()[0]
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        rows = list(pool.map(one_run, jobs))
    load_after = os.getloadavg()[0]
    print(f"MQAR learnability: {args.steps} steps x {args.batch} sequences, {args.layers} layers, head_dim "
          f"{args.head_dim}, weight decay {args.wd}; load average {load_before:.2f} -> {load_after:.2f} "
          f"({args.jobs} runs at a time, 1 thread each)" + (f"; overrides {overrides}" if overrides else "")
          + (f"; model {model_overrides}" if model_overrides else ""))
    header = (f"{'arch':<14}{'L':>5}{'C':>5}{'d':>5}{'pairs':>6}{'kv':>5}{'lr':>8}{'params':>9}{'bytes/seq':>11}"
              f"{'acc':>7}{'chance':>8}{'1/kv':>6}{'sec':>6}")
    print(header)
    for r in rows:
        print(f"{r['arch']:<14}{r['seq_len']:>5}{r['segment_len'] or '-':>5}{r['d_model']:>5}{r['pairs']:>6}"
              f"{r['kv']:>5}{r['lr']:>8.4g}{r['seed']:>5}{r['params']:>9,}{r['bytes']:>11,.0f}{r['acc']:>7.3f}"
              f"{chance(r['pairs'], r['queries'] or r['pairs']):>8.3f}{1 / r['kv']:>6.3f}"
              f"{r['seconds']:>6.0f}"
              + (f"  curve: {r['curve']}" if args.every else ""))


if __name__ == "__main__":
    main()
