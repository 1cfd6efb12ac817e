"""Finding an architecture by name: the registry's first, then those of installed plugins.

A plugin is a factory: a callable without arguments that returns an Architecture
whose `builder` is the plugin's module class (config -> nn.Module); its
permutation spec is derived by tracing (models.canon.trace). It is found

- by an entry point of the group `deepweightflow.architectures` named like the
  architecture, declared in the plugin's pyproject.toml:
  `[project.entry-points."deepweightflow.architectures"]` `tiny-mlp = "mypkg.arch:tiny_mlp"`;
- through `DWF_ARCHITECTURES`, a comma-separated list of `module:factory` paths
  (`dwf --architecture-plugin module:factory` sets it for the command);
- by a `module:factory` path given where a name is expected
  (`dwf zoo build mypkg.arch:tiny_mlp ...`).

An architecture loaded from a path is remembered by its name for the rest of the
process. Another process that reads its zoo or generator by name (a worker) finds
it through an entry point or `DWF_ARCHITECTURES`.
"""

import dataclasses
import importlib
import os
from importlib.metadata import entry_points

from .registry import ARCHITECTURES, Architecture, UnknownArchitectureError

ENTRY_POINT_GROUP = "deepweightflow.architectures"
PLUGINS_VARIABLE = "DWF_ARCHITECTURES"

_loaded: dict[str, Architecture] = {}  # name -> architecture, for plugins loaded in this process


class ArchitecturePluginError(ValueError):
    """Raised when a plugin's factory cannot be loaded or returns something unusable."""


def plugin_paths() -> list[str]:
    """The `module:factory` paths listed in DWF_ARCHITECTURES."""
    return [p.strip() for p in os.environ.get(PLUGINS_VARIABLE, "").split(",") if p.strip()]


def check_plugin(architecture: object, source: str) -> Architecture:
    """The factory's result, if it is an Architecture a plugin may provide; else ArchitecturePluginError."""
    if not isinstance(architecture, Architecture):
        raise ArchitecturePluginError(
            f"{source} returned {type(architecture).__name__}; an architecture factory returns "
            "models.architectures.Architecture(name, family, config, dataset, input_shape, builder)"
        )
    problems = []
    if architecture.builder is None:
        problems.append("`builder` is None: set it to the module class, called as builder(config)")
    if architecture.name in ARCHITECTURES:
        problems.append(f"its name {architecture.name!r} is a registered architecture's: choose another")
    if ":" in architecture.name or "," in architecture.name:
        problems.append(f"its name {architecture.name!r} contains ':' or ',': choose a plain name")
    config, shape = architecture.config, architecture.input_shape
    if not (dataclasses.is_dataclass(config) and config.__dataclass_params__.frozen):
        problems.append("`config` must be a frozen dataclass instance (@dataclass(frozen=True))")
    if not (isinstance(shape, tuple) and all(isinstance(d, int) for d in shape)):
        problems.append(f"`input_shape` must be a tuple of ints, got {shape!r}")
    if problems:
        raise ArchitecturePluginError(f"{source}: " + "; ".join(problems))
    return architecture


def load_factory(path: str) -> Architecture:
    """Import `module:factory` (the factory may be a dotted attribute), call it and check the result."""
    module_name, _, attribute = path.partition(":")
    if not module_name or not attribute:
        raise ArchitecturePluginError(f"{path!r} is not a `module:factory` path (e.g. mypkg.arch:tiny_mlp)")
    try:
        factory = importlib.import_module(module_name)
        for part in attribute.split("."):
            factory = getattr(factory, part)
    except (ImportError, AttributeError) as error:
        raise ArchitecturePluginError(
            f"cannot load the architecture factory {path!r} ({error}); install the package that "
            "provides it, or add its folder to PYTHONPATH"
        ) from error
    return check_plugin(factory(), f"architecture factory {path!r}")


def _remember(architecture: Architecture) -> Architecture:
    known = _loaded.setdefault(architecture.name, architecture)
    if known != architecture:
        raise ArchitecturePluginError(
            f"two plugins provide the architecture {architecture.name!r} with different definitions; "
            "rename one of them"
        )
    return architecture


def _from_entry_point(name: str) -> Architecture | None:
    for point in entry_points(group=ENTRY_POINT_GROUP, name=name):
        source = f"entry point {name!r} ({point.value})"
        try:
            factory = point.load()
        except (ImportError, AttributeError) as error:
            raise ArchitecturePluginError(f"cannot load {source}: {error}; reinstall its package") from error
        architecture = check_plugin(factory(), source)
        if architecture.name != name:
            raise ArchitecturePluginError(
                f"{source} returned the architecture {architecture.name!r}; name the entry point like "
                "the architecture it provides"
            )
        return architecture
    return None


def get_architecture(name: str) -> Architecture:
    """A registered architecture, or a plugin's (entry point, DWF_ARCHITECTURES, `module:factory` name)."""
    if name in ARCHITECTURES:
        return ARCHITECTURES[name]
    if name in _loaded:
        return _loaded[name]
    if ":" in name:
        return _remember(load_factory(name))
    found = _from_entry_point(name)
    if found is not None:
        return _remember(found)
    for path in plugin_paths():
        architecture = _remember(load_factory(path))
        if architecture.name == name:
            return architecture
    plugins = {point.name for point in entry_points(group=ENTRY_POINT_GROUP)} | set(_loaded)
    known = sorted(ARCHITECTURES) + sorted(plugins)
    raise UnknownArchitectureError(
        f"unknown architecture {name!r}; known architectures: {', '.join(known)}. A plugin architecture "
        f"is found by an entry point in the group {ENTRY_POINT_GROUP!r}, a `module:factory` path in "
        f"{PLUGINS_VARIABLE}, or a `module:factory` path given as the name"
    )
