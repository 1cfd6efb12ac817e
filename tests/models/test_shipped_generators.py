"""The generators shipped in generators/: loadable, within the size budget, cards complete."""

from pathlib import Path

import pytest

from models.generator import Generator, discover_generators

SHIPPED = Path(__file__).resolve().parents[2] / "generators"
MAX_ARTIFACT_BYTES = 30_000_000  # 30 MB per artifact folder, everything in it included


# Networks in each card's `generated` row: 100, but 50 for ResNet-20, whose forwards cost ~1.4 ms
# per image on one thread here (its table is measured on the first 1,000 test images).
EVALUATED = {"resnet20-fashion": 50}


@pytest.mark.parametrize(
    "name",
    [
        "mlp-digits",
        "mlp-fashion",
        "cnn-fashion",
        "mlp-breast-cancer",
        "mlp-mnist1d",
        "cnn-mnist1d",
        "vit-fashion",
        "resnet20-fashion",
    ],
)
def test_shipped_generator_loads_within_budget_with_its_evaluation(name):
    directory = discover_generators(SHIPPED)[name]
    size = sum(path.stat().st_size for path in directory.iterdir())
    assert size <= MAX_ARTIFACT_BYTES, f"{name} is {size / 1e6:.2f} MB"
    generator = Generator.load(directory, device="cpu")
    rows = generator.card.evaluation["rows"]
    assert {"zoo", "generated", "pca-gaussian"} <= rows.keys()
    assert rows["generated"]["count"] == generator.card.evaluation["count"] == EVALUATED.get(name, 100)
    functional = {"error_iou_median", "disagreement_median", "ensemble_accuracy_mean", "ensemble_nll_mean"}
    assert functional <= rows["generated"].keys() and functional <= rows["zoo"].keys()
    assert generator.card.evaluation["frontier"], "every card carries the baselines at equal error IoU"
    if generator.screening is not None:  # the table shows what screening changes, against the same baseline
        assert "unscreened" in rows and any(k.startswith("noise@") and k.endswith("screened") for k in rows)
    assert (directory / "evaluation.png").read_bytes()[:4] == b"\x89PNG"
