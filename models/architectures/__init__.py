"""One file per architecture family, each with a Config dataclass; `registry` names configurations."""

from .registry import ARCHITECTURES, Architecture, UnknownArchitectureError, get_architecture

__all__ = ["ARCHITECTURES", "Architecture", "UnknownArchitectureError", "get_architecture"]
