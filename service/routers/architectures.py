"""GET /architectures: the generators this deployment can run, with their cards."""

from typing import Any

from fastapi import APIRouter

from service.deps import CatalogDep
from service.schemas import ArchitectureCard, ArchitectureList

router = APIRouter(tags=["architectures"])


def _accuracy(card: dict[str, Any], section: str) -> dict[str, float] | None:
    return (card.get(section) or {}).get("test_accuracy")


@router.get("/architectures", response_model=ArchitectureList)
def list_architectures(catalog: CatalogDep) -> ArchitectureList:
    """Every installed generator: parameter count, zoo and generated test accuracy, default sampler."""
    return ArchitectureList(
        architectures=[
            ArchitectureCard(
                name=name,
                architecture=card.get("architecture", {}),
                parameter_count=card.get("parameter_count"),
                zoo_accuracy=_accuracy(card, "zoo"),
                generated_accuracy=_accuracy(card, "generated"),
                sampler=card.get("sampler"),
                card=card,
            )
            for name, card in catalog.cards.items()
        ]
    )
