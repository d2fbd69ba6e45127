"""Model zoo: Transformer++ and Memory Caching recurrent models (see DESIGN.md).

`LanguageModel` is imported lazily so that configuration, the size ladder and FLOP accounting
(and the `mcscale` commands built on them) do not pay for importing torch.
"""

from typing import Any

from scaling.models.config import CACHING_STRATEGIES, MIXERS, ModelConfig

__all__ = ["CACHING_STRATEGIES", "MIXERS", "LanguageModel", "ModelConfig"]


def __getattr__(name: str) -> Any:
    if name == "LanguageModel":
        from scaling.models.model import LanguageModel

        return LanguageModel
    raise AttributeError(name)
