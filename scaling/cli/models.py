"""`mcscale models`: the size ladder with parameters, FLOPs and memory per architecture."""

from __future__ import annotations

import typer
from rich.console import Console
from rich.table import Table

from scaling.cli.common import named_as_options, user_errors_exit_2
from scaling.errors import UserInputError
from scaling.formatting import byte_size
from scaling.models.architectures import parse_architecture
from scaling.models.config import ModelConfig
from scaling.models.flops import cached_reads_per_token, forward_flops, sequence_bytes
from scaling.models.ladder import DEFAULT_ASPECT, DEFAULT_HEAD_DIM, format_count, honoured_shape, parse_size, shape_for_params

commands = typer.Typer()  # merged into the `mcscale` app by scaling.cli.app

#: library field -> the `mcscale models` option that sets it
MODELS_OPTIONS = {"seq_len": "--seq-len", "segment_len": "--segment-len", "segmentation": "--segmentation",
                  "top_k": "--top-k", "d_model": "--head-dim", "n_heads": "--head-dim", "head_dim": "--head-dim",
                  "vocab_size": "--vocab-size", "chunk_len": "--chunk-len"}


@commands.command("models")
@user_errors_exit_2
def models(
    sizes: str = typer.Option("100K,1M,10M,125M,1.3B,7B", help="Comma-separated non-embedding parameter targets."),
    arch: str = typer.Option("swla+grm", help="Architecture: transformer, linear, swla, dla, dla-matrix, titans, "
                             "optionally +residual|+grm|+soup|+ssc; a bare strategy (grm) means swla+grm."),
    seq_len: int = typer.Option(4096, help="Sequence length L in tokens."),
    segment_len: int = typer.Option(256, help="Segment length C (the finest, newest segment for --segmentation log)."),
    segmentation: str = typer.Option("constant", help="constant (N = L/C segments) or log (the paper's: largest "
                                     "segment first, e.g. L=4096, C=256 -> 2048, 1024, 512, 256, 256)."),
    top_k: int = typer.Option(2, help="SSC: cached segments each token may select."),
    head_dim: int = typer.Option(DEFAULT_HEAD_DIM, help="Head dimension, fixed across the ladder."),
    vocab_size: int = typer.Option(256, help="Vocabulary size (256 = raw bytes, mcscale's default tokenizer)."),
    chunk_len: int = typer.Option(64, help="Block length of the chunk-parallel memory scan."),
    bytes_per_element: int = typer.Option(2, help="Bytes per stored state/cache element (2 = bf16)."),
) -> None:
    """Print the size ladder: shape, parameters, training FLOPs per token, state/cache bytes.

    Each row also shows the Transformer of the same target size, so the cost of Memory
    Caching's read term and of attention's KV cache can be compared directly.
    """
    if seq_len < 1:
        raise UserInputError("--seq-len", f"must be positive, got {seq_len}", "pass e.g. --seq-len 4096")
    for option, value in (("--head-dim", head_dim), ("--vocab-size", vocab_size), ("--chunk-len", chunk_len),
                          ("--bytes-per-element", bytes_per_element)):
        if value < 1:
            raise UserInputError(option, f"must be positive, got {value}", f"pass {option} 1 or more")
    with named_as_options(MODELS_OPTIONS):
        _print_ladder(sizes, arch, seq_len, segment_len, segmentation, top_k, head_dim, vocab_size, chunk_len,
                      bytes_per_element)


def _print_ladder(sizes: str, arch: str, seq_len: int, segment_len: int, segmentation: str, top_k: int,
                  head_dim: int, vocab_size: int, chunk_len: int, bytes_per_element: int) -> None:
    architecture = parse_architecture(arch, field="--arch")
    targets = [parse_size(s, field="--sizes") for s in sizes.split(",") if s.strip()]
    if not targets:
        raise UserInputError("--sizes", "no sizes given", "pass e.g. --sizes 1M,10M,125M")
    caching_fields = {}
    if architecture.caching != "none":
        caching_fields = {"segment_len": segment_len, "segmentation": segmentation, "top_k": top_k}
    base = ModelConfig(vocab_size=vocab_size, d_model=head_dim, n_heads=1, seq_len=seq_len, chunk_len=chunk_len,
                       **architecture.config_fields(), **caching_fields)
    transformer_base = ModelConfig(vocab_size=vocab_size, d_model=head_dim, n_heads=1, seq_len=seq_len,
                                   chunk_len=chunk_len, mixer="attention")
    table = Table(title=f"{architecture.name} ladder at L={seq_len}"
                  + (f", C={segment_len} ({segmentation})" if caching_fields else "")
                  + f", head dim {head_dim}, vocab {vocab_size}")
    for col in ("target", "layers x width", "heads", "params non-emb", "params total",
                "train FLOP/token", "MC read", "reads/token", "state/seq", "cache/seq",
                "Transformer FLOP/token", "Transformer KV/seq"):
        table.add_column(col, justify="right")
    for target in targets:
        rung = honoured_shape(target, base, head_dim=head_dim, aspect=DEFAULT_ASPECT, field="--sizes")
        cfg = rung.config
        flops = forward_flops(cfg)
        memory = sequence_bytes(cfg, bytes_per_element=bytes_per_element)
        ref = shape_for_params(target, transformer_base, head_dim=head_dim).config
        ref_flops = forward_flops(ref)
        ref_bytes = sequence_bytes(ref, bytes_per_element=bytes_per_element)
        table.add_row(
            format_count(target), f"{cfg.n_layers} x {cfg.d_model}", str(cfg.n_heads),
            format_count(rung.params_nonembed), format_count(rung.params_total),
            f"{flops.training:.3g}", f"{flops.cached_read / flops.forward:.1%}",
            f"{cached_reads_per_token(cfg):.3g}", byte_size(memory.state_bytes), byte_size(memory.cache_bytes),
            f"{ref_flops.training:.3g}", byte_size(ref_bytes.cache_bytes))
    console = Console()
    if not console.is_terminal:
        console = Console(width=180)
    console.print(table)
    console.print("FLOP/token: training (3 x forward) matmul FLOPs per token averaged over the sequence, "
                  "exact for mcscale's implementation (see scaling/models/flops.py); MC read: share of forward "
                  "FLOPs spent reading cached memories; reads/token: cached memories an average token reads; state/cache per sequence at its last token. "
                  "Transformer columns: the Transformer of the same target size.", soft_wrap=True)
