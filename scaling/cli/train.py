"""`mcscale train`: one training run in the terminal, with live progress and a summary table."""

from __future__ import annotations

from typing import Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

import math
from pathlib import Path

from scaling.cli.common import named_as_options, user_errors_exit_2
from scaling.errors import UserInputError
from scaling.models.architectures import parse_architecture
from scaling.models.config import ModelConfig
from scaling.models.ladder import DEFAULT_HEAD_DIM, format_count, honoured_shape, parse_size

#: library field -> the `mcscale train` option that sets it (so messages name what the user typed)
TRAIN_OPTIONS = {
    "seq_len": "--seq-len", "segment_len": "--segment-len", "segmentation": "--segmentation",
    "segment_mode": "--segment-mode", "top_k": "--top-k", "online_gate_init": "--online-gate-init", "d_model": "--head-dim", "n_heads": "--head-dim",
    "head_dim": "--head-dim", "tokens": "--tokens", "tokens_per_param": "--tokens-per-param",
    "batch_tokens": "--batch-tokens", "lr": "--lr", "eval_every_steps": "--eval-every", "task": "--task",
    "mqar": "--mqar-pairs", "needle_lengths": "--needle-lengths", "device": "--device", "precision": "--precision",
    "micro_batch_tokens": "--micro-batch-tokens", "corpus": "--data", "data": "--data", "source": "--data",
    "tokenizer": "--tokenizer", "threads": "--threads", "model": "--size", "corpus.format": "--format",
    "corpus.text_field": "--text-field", "corpus.tokenizer": "--tokenizer", "corpus.s3_endpoint": "--s3-endpoint",
}


def _checkpoint_folder(path: Optional[str]) -> None:
    """A checkpoint folder must be a folder (or creatable): refuse before training, not after the first eval."""
    if path is None:
        return
    folder = Path(path).expanduser()
    if folder.exists() and not folder.is_dir():
        raise UserInputError("--checkpoint-dir", f"{folder} is a file, not a folder",
                             "pass a folder (new or holding a checkpoint of this run)")
    for parent in folder.parents:
        if parent.exists():
            if not parent.is_dir():
                raise UserInputError("--checkpoint-dir", f"{parent} is a file, so {folder} cannot be created",
                                     "pass a folder path whose parents are folders")
            break

commands = typer.Typer()  # merged into the `mcscale` app by scaling.cli.app


def _int_list(text: str, field: str) -> tuple[int, ...]:
    try:
        return tuple(int(parse_size(part, field=field)) for part in text.split(",") if part.strip())
    except UserInputError:
        raise
    except ValueError:
        raise UserInputError(field, f"cannot read {text!r}", "give comma-separated integers, e.g. 1K,2K") from None


@commands.command("train")
@user_errors_exit_2
def train(
    arch: str = typer.Option("swla+grm", help="Architecture, e.g. transformer, swla, swla+grm, titans+ssc."),
    size: str = typer.Option("1M", help="Target non-embedding parameters (shape from the size ladder)."),
    seq_len: int = typer.Option(512, help="Training sequence length in tokens."),
    tokens: Optional[str] = typer.Option(None, help="Token budget, e.g. 5M (default: 20 tokens per parameter)."),
    tokens_per_param: Optional[float] = typer.Option(None, help="Token budget per non-embedding parameter."),
    batch_tokens: int = typer.Option(8192, help="Tokens per optimiser step."),
    lr: float = typer.Option(3e-3, help="Peak learning rate (AdamW, warmup + cosine to 10%)."),
    segment_len: int = typer.Option(64, help="MC segment length C (first segment for --segmentation log)."),
    segmentation: str = typer.Option("constant", help="constant or log."),
    segment_mode: str = typer.Option("checkpoint", help="checkpoint or independent."),
    top_k: int = typer.Option(2, help="SSC: cached segments per token."),
    online_gate_init: Optional[float] = typer.Option(None, help="GRM/Soup/SSC: initial logit of the online memory's "
                                                     "gate (default: log(3 x caches a token reads); 0: the "
                                                     "paper's plain softmax)."),
    head_dim: int = typer.Option(DEFAULT_HEAD_DIM, help="Head dimension of the size ladder."),
    data: str = typer.Option("builtin", help="Corpus: builtin, a path, glob or s3:// URI (text, JSONL, Parquet, "
                             ".bin/.npy token shards)."),
    data_format: str = typer.Option("auto", "--format", help="auto, text, jsonl, parquet or tokens."),
    text_field: str = typer.Option("text", help="JSONL field / Parquet column with the text."),
    tokenizer: str = typer.Option("bytes", help="bytes (vocab 256) or a Hugging Face tokenizers JSON file."),
    s3_endpoint: Optional[str] = typer.Option(None, help="Endpoint of an S3-compatible store, e.g. http://127.0.0.1:9000."),
    task: str = typer.Option("lm", help="lm (language modelling on --data) or mqar (train on the recall task)."),
    mqar_pairs: int = typer.Option(0, help="Evaluate MQAR with this many key-value pairs (0: off; on with --task mqar)."),
    needle_lengths: str = typer.Option("", help="Needle-in-a-haystack lengths to evaluate, e.g. 256,512."),
    eval_every: int = typer.Option(50, help="Evaluate (and checkpoint) every this many steps."),
    seed: int = typer.Option(0, help="Seed for initialisation and data order."),
    checkpoint_dir: Optional[str] = typer.Option(None, help="Checkpoint here; an existing checkpoint is resumed."),
    threads: Optional[int] = typer.Option(None, help="Torch threads (default: all CPUs this process may use)."),
    device: str = typer.Option("auto", help="auto (cuda when a GPU is visible), cpu or cuda."),
    precision: str = typer.Option("fp32", help="fp32, or bf16 (autocast, fp32 master weights and loss)."),
    micro_batch_tokens: Optional[int] = typer.Option(None, help="Tokens per forward/backward (gradient "
                                                     "accumulation); default: the whole batch."),
    compile_model: Optional[bool] = typer.Option(None, "--compile/--no-compile", help="torch.compile the model "
                                                 "(default: on for cuda, off for cpu)."),
    activation_checkpointing: bool = typer.Option(False, help="Recompute each block in backward to save memory."),
) -> None:
    """Train one model and print its final metrics (loss, bits per byte, recall, throughput)."""
    from scaling.train import run_trial  # heavy (torch): imported when the command runs
    from scaling.train.batches import check_inputs

    if not math.isfinite(lr) or lr <= 0:
        raise UserInputError("--lr", f"must be a positive, finite learning rate, got {lr}", "pass e.g. --lr 3e-3")
    if tokens is not None and tokens_per_param is not None:
        raise UserInputError("--tokens", "give either --tokens or --tokens-per-param, not both", "drop one of them")
    if seed < 0:
        raise UserInputError("--seed", f"must be 0 or more, got {seed}", "pass e.g. --seed 0")
    if threads is not None and threads < 1:
        raise UserInputError("--threads", f"needs at least one thread, got {threads}", "leave it out or pass 1 or more")
    if mqar_pairs < 0:
        raise UserInputError("--mqar-pairs", f"cannot be negative, got {mqar_pairs}", "use 0 (off) or e.g. 8")
    if head_dim < 1:
        raise UserInputError("--head-dim", f"must be positive, got {head_dim}", "pass e.g. --head-dim 64")
    _checkpoint_folder(checkpoint_dir)
    with named_as_options(TRAIN_OPTIONS):
        architecture, rung, config = _trial(**{k: v for k, v in locals().items() if k in _TRIAL_ARGS})
        check_inputs(config)  # a missing corpus or a needle that cannot fit fails here, before any step
    _train(architecture, rung, config, seq_len, run_trial)


_TRIAL_ARGS = ("arch", "size", "seq_len", "tokens", "tokens_per_param", "batch_tokens", "lr", "segment_len",
               "segmentation", "segment_mode", "top_k", "online_gate_init", "head_dim", "data", "data_format", "text_field", "tokenizer",
               "s3_endpoint", "task", "mqar_pairs", "needle_lengths", "eval_every", "seed", "checkpoint_dir",
               "threads", "device", "precision", "micro_batch_tokens", "compile_model", "activation_checkpointing")


def _trial(arch, size, seq_len, tokens, tokens_per_param, batch_tokens, lr, segment_len, segmentation,  # noqa: ANN001
           segment_mode, top_k, online_gate_init, head_dim, data, data_format, text_field, tokenizer, s3_endpoint, task, mqar_pairs,
           needle_lengths, eval_every, seed, checkpoint_dir, threads, device, precision, micro_batch_tokens,
           compile_model, activation_checkpointing):
    """The command line as (architecture, ladder rung, TrialConfig); every fault a UserInputError."""
    from scaling.data.corpus import CorpusSpec
    from scaling.data.recall import MQARSpec
    from scaling.train import TrialConfig

    architecture = parse_architecture(arch, field="--arch")
    caching = {}
    if architecture.caching != "none":
        caching = dict(segment_len=segment_len, segmentation=segmentation, segment_mode=segment_mode, top_k=top_k,
                       online_gate_init=online_gate_init)
    vocab = 256
    if tokenizer != "bytes":
        from scaling.data.tokenizers import load_tokenizer

        vocab = load_tokenizer(tokenizer).vocab_size
    base = ModelConfig(vocab_size=vocab, d_model=head_dim, n_heads=1, seq_len=seq_len,
                       chunk_len=min(64, seq_len), **architecture.config_fields(), **caching)
    rung = honoured_shape(parse_size(size, field="--size"), base, head_dim=head_dim, field="--size")
    mqar = None
    if task == "mqar" or mqar_pairs:
        pairs = mqar_pairs or 8
        mqar = MQARSpec(n_pairs=pairs, n_queries=pairs, key_vocab=min(64, vocab // 2),
                        value_vocab=min(64, vocab // 2), seq_len=seq_len)
    budget = None if tokens is None else int(parse_size(tokens, field="--tokens"))
    per_param = tokens_per_param if tokens_per_param is not None else (None if budget is not None else 20.0)
    config = TrialConfig(
        model=rung.config,
        corpus=CorpusSpec(source=data, format=data_format, text_field=text_field, tokenizer=tokenizer,
                          s3_endpoint=s3_endpoint),
        task=task, tokens=budget, tokens_per_param=per_param, batch_tokens=batch_tokens, lr=lr, seed=seed,
        eval_every_steps=eval_every, mqar=mqar, needle_lengths=_int_list(needle_lengths, "--needle-lengths"),
        checkpoint_dir=checkpoint_dir, threads=threads, device=device, precision=precision,
        micro_batch_tokens=micro_batch_tokens, compile=compile_model, activation_checkpointing=activation_checkpointing)
    return architecture, rung, config


def _train(architecture, rung, config, seq_len: int, run_trial) -> None:  # noqa: ANN001
    """Train with live progress and print the summary table; exit 1 when the run diverged."""
    console = Console()
    cfg = rung.config
    console.print(f"[bold]{architecture.name}[/] {cfg.n_layers} x {cfg.d_model} ({cfg.n_heads} heads), "
                  f"{format_count(rung.params_nonembed)} non-embedding parameters, seq_len {seq_len}")
    with Progress(TextColumn("[progress.description]{task.description}"), BarColumn(),
                  TextColumn("{task.fields[tokens]} tokens"), TextColumn("loss {task.fields[loss]}"),
                  TextColumn("{task.fields[rate]} tok/s"), TimeElapsedColumn(), TimeRemainingColumn(),
                  console=console, transient=False) as progress:
        bar = progress.add_task("training", total=None, tokens="0", loss="-", rate="-")

        def on_step(info: dict[str, float]) -> None:
            progress.update(bar, total=info["total_steps"], completed=info["step"],
                            tokens=format_count(info["tokens"]), loss=f"{info['loss']:.4f}",
                            rate=f"{info['tokens_per_second']:,.0f}")

        def reporter(metrics: dict, _ckpt: Optional[str]) -> None:
            shown = {k: v for k, v in metrics.items() if k.startswith(("val_", "mqar", "needle"))}
            if shown:
                progress.console.print(f"step {metrics['step']}: " + ", ".join(
                    f"{k} {v:.4f}" for k, v in shown.items()))

        result = run_trial(config, reporter=reporter, on_step=on_step)
    table = Table(title=f"{architecture.name}: {result.status}")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in result.metrics.items():
        if key == "train_loss_steps":
            continue
        table.add_row(key, f"{value:.6g}" if isinstance(value, float) else str(value))
    console.print(table)
    if result.status == "diverged":
        raise typer.Exit(code=1)
    if result.metrics.get("learned") == 0:
        from scaling.train.learned import not_learned_reason

        console.print(f"[bold red]This run {not_learned_reason(result.metrics.get('val_loss'), config.model.vocab_size)}"
                      "[/]; a study would leave it out of every fit. Try a lower --lr.", soft_wrap=True)
        raise typer.Exit(code=1)
