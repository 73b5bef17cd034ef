"""Published results the book compares against: one home for every number taken from a paper.

Usage::

    from mnist_pruning.references import ANCHORS, PUBLISHED_BASELINE
    PUBLISHED_BASELINE["mlp"]        # 0.9836: LeNet-300-100's dense test accuracy in Han et al. 2015
    [a for a in ANCHORS if a.model == "cnn"]

Sources and more context: ``shared/reference/anchors.md`` of the project's steering notes, summarised in the
book's introduction.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Anchor", "ANCHORS", "PUBLISHED_BASELINE", "MODEL_TITLES"]

MODEL_TITLES = {"mlp": "LeNet-300-100 (mlp)", "cnn": "LeNet-5-Caffe (cnn)"}

# Han et al. 2015, "Learning both Weights and Connections for Efficient Neural Networks", Tables 1-2
# (1.64 % / 0.80 % test error).
PUBLISHED_BASELINE = {"mlp": 0.9836, "cnn": 0.9920}


@dataclass(frozen=True)
class Anchor:
    """A published pruned result to mark on the accuracy figure."""

    model: str  # mlp | cnn
    source: str  # short citation
    kept: float  # fraction of weights kept
    accuracy: float  # test accuracy, fraction

    @property
    def sparsity(self) -> float:
        return 1.0 - self.kept


# Han et al. 2015, Tables 1-3: 8 % of the weights kept, 1.59 % / 0.77 % error.
ANCHORS = (
    Anchor("mlp", "Han et al. 2015", 0.08, 0.9841),
    Anchor("cnn", "Han et al. 2015", 0.08, 0.9923),
)
