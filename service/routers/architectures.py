"""GET /architectures: the generators this deployment can run, with their cards."""

from fastapi import APIRouter

from service.deps import CatalogDep
from service.schemas import ArchitectureCard, ArchitectureList

router = APIRouter(tags=["architectures"])


@router.get("/architectures", response_model=ArchitectureList)
def list_architectures(catalog: CatalogDep) -> ArchitectureList:
    """Every installed generator: its input contract, parameter count, zoo and generated test
    accuracy, default sampler, and the whole card."""
    return ArchitectureList(
        architectures=[
            ArchitectureCard(
                name=name,
                architecture=card.architecture.model_dump(),
                input=card.input,
                usage=card.input.usage(),
                parameter_count=card.parameter_count,
                zoo_accuracy=card.zoo.test_accuracy.model_dump(),
                generated_accuracy=None
                if card.generated is None
                else card.generated.test_accuracy.model_dump(),
                sampler={"method": card.sampler.method, "steps": card.sampler.steps},
                card=card.model_dump(mode="json"),
            )
            for name, card in catalog.cards.items()
        ]
    )
