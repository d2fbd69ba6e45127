"""Architecture names users write in specs and on the command line.

Grammar: ``<base>[+<strategy>]`` where base is ``transformer`` (alias ``attention``),
``linear``, ``swla``, ``dla`` (deep linear attention: the paper's deep memory, eq. 30; alias
``dla-mlp``), ``dla-matrix`` (eq. 30 on a matrix memory, a comparison variant) or ``titans``,
and strategy one of residual, grm, soup, ssc. A bare strategy (``grm``, ``ssc``, ...) means
SWLA with that strategy, the base memory the paper's headline MC results use.
"""

from __future__ import annotations

from dataclasses import dataclass

from scaling.errors import UserInputError

BASES: dict[str, tuple[str, str]] = {
    "transformer": ("attention", "kv"),
    "attention": ("attention", "kv"),
    "linear": ("linear", "matrix"),
    "swla": ("swla", "matrix"),
    "dla": ("dla", "mlp"),
    "dla-mlp": ("dla", "mlp"),
    "dla-matrix": ("dla", "matrix"),
    "titans": ("titans", "mlp"),
}
ALIASES: dict[str, str] = {"attention": "transformer", "dla-mlp": "dla"}
STRATEGIES = ("residual", "grm", "soup", "ssc")
DEFAULT_MC_BASE = "swla"


@dataclass(frozen=True)
class Architecture:
    name: str
    mixer: str
    memory: str
    caching: str

    def config_fields(self) -> dict[str, str]:
        return {"mixer": self.mixer, "memory": self.memory, "caching": self.caching}


def parse_architecture(name: str, field: str = "arch") -> Architecture:
    """Parse e.g. 'swla+grm', 'titans', 'transformer', 'ssc' into mixer/memory/caching."""
    text = name.strip().lower()
    if text in STRATEGIES:
        text = f"{DEFAULT_MC_BASE}+{text}"
    base, _, strategy = text.partition("+")
    known = ", ".join(sorted(BASES)) + "; optionally +" + "|+".join(STRATEGIES)
    if base not in BASES:
        raise UserInputError(field, f"unknown architecture {name!r}", f"use one of {known} (e.g. swla+grm)")
    mixer, memory = BASES[base]
    caching = strategy or "none"
    if caching != "none" and caching not in STRATEGIES:
        raise UserInputError(field, f"unknown caching strategy {strategy!r} in {name!r}",
                             f"use one of {', '.join(STRATEGIES)}")
    if mixer == "attention" and caching != "none":
        raise UserInputError(field, f"{name!r}: memory caching wraps a recurrent memory, not attention",
                             "use transformer alone, or a recurrent base such as swla+grm")
    base = ALIASES.get(base, base)
    canonical = base if caching == "none" else f"{base}+{caching}"
    return Architecture(canonical, mixer, memory, caching)
