"""One file per architecture family, each with a Config dataclass; `registry` names configurations,
`lookup` finds them by name, plugins' included."""

from .lookup import ArchitecturePluginError, get_architecture
from .registry import ARCHITECTURES, Architecture, UnknownArchitectureError

__all__ = [
    "ARCHITECTURES",
    "Architecture",
    "ArchitecturePluginError",
    "UnknownArchitectureError",
    "get_architecture",
]
