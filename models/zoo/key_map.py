"""Mapping a checkpoint's state-dict keys onto a registered architecture's keys.

`map_keys(source, target, ...)` returns {checkpoint key: architecture key}, in three steps:

1. explicit rules (`--key-map old=new,...` or a JSON object): `old` is a whole key or a module
   prefix (`fc1=layers.0` renames fc1.weight and fc1.bias); `old=` with nothing after drops keys;
2. the same names: nothing to map (shapes must agree);
3. automatic, only when shapes make it unambiguous: tensors are grouped by shape and paired in
   order within each group (the checkpoint's module order for torch files, natural name order
   for safetensors; the architecture's module order), so a shape that occurs once is a unique
   match and repeated shapes (every hidden layer's bias) follow the layer order. The pairing must
   map each checkpoint module to one architecture module and back (fc1.weight and fc1.bias both
   to layers.0.*); otherwise, or when the shapes do not tile, it refuses.

Every refusal names the key, the expected shape and the fix (an explicit rule).
"""

from collections import defaultdict
from collections.abc import Mapping, Sequence

Shape = tuple[int, ...]
FIX = "pass explicit rules, e.g. --key-map fc1=layers.0,fc2=layers.1 (keys or module prefixes; old= drops)"


class KeyMapError(ValueError):
    """The checkpoint's keys cannot be mapped onto the architecture; the message names the fix."""


def describe(shape: Shape) -> str:
    return "(" + ", ".join(str(s) for s in shape) + ")"


def module_of(key: str) -> str:
    return key.rpartition(".")[0]


def apply_rules(keys: Sequence[str], rules: Mapping[str, str]) -> dict[str, str]:
    """{checkpoint key: renamed key} under the explicit rules; dropped keys are left out."""
    renamed, used = {}, set()
    for key in keys:
        rule = (
            key if key in rules else max((p for p in rules if key.startswith(p + ".")), key=len, default=None)
        )
        if rule is None:
            renamed[key] = key
            continue
        used.add(rule)
        if rules[rule]:
            renamed[key] = rules[rule] + key[len(rule) :]
    unused = [rule for rule in rules if rule not in used]
    if unused:
        raise KeyMapError(
            f"key-map rule {unused[0]}={rules[unused[0]]} matches no checkpoint key; the checkpoint "
            f"has {', '.join(list(keys)[:8])}{', ...' if len(keys) > 8 else ''}"
        )
    collided = [k for k in set(renamed.values()) if list(renamed.values()).count(k) > 1]
    if collided:
        raise KeyMapError(
            f"key-map rules map two checkpoint keys onto {collided[0]}; make the rules distinct"
        )
    return renamed


def pair_by_shape(source: Mapping[str, Shape], target: Mapping[str, Shape]) -> dict[str, str] | None:
    """Same-shaped tensors paired in order; None unless every group has as many on both sides
    and modules correspond one to one."""
    groups: dict[Shape, list[str]] = defaultdict(list)
    for key, shape in source.items():
        groups[shape].append(key)
    pairs: dict[str, str] = {}
    for key, shape in target.items():
        if not groups[shape]:
            return None
        pairs[groups[shape].pop(0)] = key
    if any(groups.values()):
        return None
    modules: dict[str, set[str]] = defaultdict(set)
    back: dict[str, set[str]] = defaultdict(set)
    for old, new in pairs.items():
        modules[module_of(old)].add(module_of(new))
        back[module_of(new)].add(module_of(old))
    if any(len(m) > 1 for m in (*modules.values(), *back.values())):
        return None
    return pairs


def explain(source: Mapping[str, Shape], target: Mapping[str, Shape], architecture: str) -> str:
    """Why shapes alone cannot map `source` onto `target`: the first key short of a partner."""
    have: dict[Shape, int] = defaultdict(int)
    for shape in source.values():
        have[shape] += 1
    for key, shape in target.items():
        if have[shape] == 0:
            return (
                f"{architecture} expects {key} of shape {describe(shape)} and the checkpoint has no "
                "(further) tensor of that shape (is this the right architecture?)"
            )
        have[shape] -= 1
    if len(source) != len(target):
        extra = [k for k, shape in source.items() if have[shape] > 0][-1]
        return (
            f"the checkpoint's {extra} {describe(source[extra])} has no place in {architecture} "
            f"(drop it with --key-map {extra}=)"
        )
    return "same-shaped tensors do not pair up module by module in the checkpoint's order"


def map_keys(
    source: Mapping[str, Shape],
    target: Mapping[str, Shape],
    architecture: str,
    rules: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """{checkpoint key: architecture key} for a checkpoint with `source` keys -> shapes (in the
    order described above) and an architecture with `target` keys -> shapes (module order)."""
    renamed = apply_rules(list(source), rules or {})
    shapes = {renamed[k]: source[k] for k in source if k in renamed}
    if shapes.keys() == target.keys():
        for key, shape in target.items():
            if shapes[key] != shape:
                original = next(k for k, v in renamed.items() if v == key)
                raise KeyMapError(
                    f"{original}: {architecture} expects {key} of shape {describe(shape)}, the checkpoint "
                    f"has {describe(shapes[key])}; is this the right architecture? Otherwise {FIX}"
                )
        return renamed
    pairs = pair_by_shape(shapes, target)
    if pairs is None:
        raise KeyMapError(
            f"cannot map the checkpoint's keys onto {architecture}: {explain(shapes, target, architecture)}. "
            f"{architecture} has {', '.join(f'{k} {describe(s)}' for k, s in target.items())}; {FIX}"
        )
    return {old: pairs[new] for old, new in renamed.items()}


def parse_rules(text: str) -> dict[str, str]:
    """`old=new,old2=new2` (`old=` drops) -> {old: new}; a KeyMapError for anything else."""
    rules = {}
    for part in (p.strip() for p in text.split(",") if p.strip()):
        old, sep, new = part.partition("=")
        if not sep or not old.strip():
            raise KeyMapError(f"--key-map takes old=new pairs separated by commas, got {part!r}")
        rules[old.strip()] = new.strip()
    return rules
