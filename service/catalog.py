"""The generators on offer, read from their card.json files (no torch: the API only needs the cards).

The catalog follows the generators directory while the service runs: every request that needs it
stats the cards (`contract.card.artifact_stamps`) and re-reads only those that are new or were
replaced, so a generator published into the folder is offered without a restart, and one whose
folder is removed is no longer offered.
"""

import logging
import threading
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from contract.card import CARD_FILE, CardStamp, GeneratorCard, artifact_stamps, read_card_file

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Catalog:
    """Generator name -> card. A name is its artifact folder's name, as the workers see it."""

    cards: dict[str, GeneratorCard]

    @property
    def names(self) -> list[str]:
        return sorted(self.cards)


def read_card_or_none(generators_dir: Path, name: str) -> GeneratorCard | None:
    """`<generators_dir>/<name>/card.json`, or None (logged) when it does not parse."""
    card_path = Path(generators_dir) / name / CARD_FILE
    try:
        return read_card_file(card_path)
    except (OSError, ValueError) as error:
        log.warning("not offering generator %s: unreadable %s (%s)", name, card_path, error)
        return None


class CatalogFolder:
    """The catalog of one generators directory, kept current at the cost of a stat per artifact."""

    def __init__(self, generators_dir: Path):
        self.generators_dir = Path(generators_dir)
        self.entries: dict[str, tuple[CardStamp, GeneratorCard | None]] = {}
        self.catalog = Catalog({})
        self.lock = threading.Lock()

    def current(self) -> Catalog:
        """The catalog as the folder is now (cards re-read only when their stamp changed)."""
        stamps = artifact_stamps(self.generators_dir)
        with self.lock:
            if stamps == {name: stamp for name, (stamp, _) in self.entries.items()}:
                return self.catalog
            self.entries = {
                name: self.entries[name]
                if name in self.entries and self.entries[name][0] == stamp
                else (stamp, read_card_or_none(self.generators_dir, name))
                for name, stamp in stamps.items()
            }
            cards = {name: card for name, (_, card) in self.entries.items() if card is not None}
            self.catalog = Catalog(cards)
            return self.catalog


@lru_cache(maxsize=8)
def catalog_folder(generators_dir: Path) -> CatalogFolder:
    """The one CatalogFolder per directory in this process."""
    return CatalogFolder(generators_dir)
