"""The generators on offer, read from their card.json files (no torch: the API only needs the cards)."""

import logging
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from contract.card import GeneratorCard, read_card_file

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Catalog:
    """Generator name -> card. A name is its artifact folder's name, as the workers see it."""

    cards: dict[str, GeneratorCard]

    @property
    def names(self) -> list[str]:
        return sorted(self.cards)


def read_catalog(generators_dir: Path) -> Catalog:
    """Every `<generators_dir>/<name>/card.json` that parses; half-written (dot) folders are skipped."""
    cards: dict[str, GeneratorCard] = {}
    if Path(generators_dir).is_dir():
        for card_path in sorted(Path(generators_dir).glob("*/card.json")):
            name = card_path.parent.name
            if name.startswith("."):
                continue
            try:
                cards[name] = read_card_file(card_path)
            except (OSError, ValueError) as error:
                log.warning("not offering generator %s: unreadable %s (%s)", name, card_path, error)
    return Catalog(cards)


@lru_cache(maxsize=8)
def cached_catalog(generators_dir: Path) -> Catalog:
    """The catalog, read once per process and directory (restart to pick up new generators)."""
    return read_catalog(generators_dir)
