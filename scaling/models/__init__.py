"""Model zoo: Transformer++ and Memory Caching recurrent models (see DESIGN.md)."""

from scaling.models.config import CACHING_STRATEGIES, MIXERS, ModelConfig
from scaling.models.model import LanguageModel

__all__ = ["CACHING_STRATEGIES", "MIXERS", "LanguageModel", "ModelConfig"]
