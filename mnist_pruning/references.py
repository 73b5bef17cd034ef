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

__all__ = [
]

_MODEL_TITLES = {"mlp": "LeNet-300-100 (mlp)", "cnn": "LeNet-5-Caffe (cnn)"}

# Han et al. 2015, "Learning both Weights and Connections for Efficient Neural Networks", Tables 1-2
# (1.64 % / 0.80 % test error).
_PUBLISHED_BASELINE = {"mlp": 0.9836, "cnn": 0.9920}


@dataclass(frozen=True)
class _Anchor:
    """A published pruned result to mark on the accuracy figure."""

    model: str  # mlp | cnn
    source: str  # short citation
    kept: float  # fraction of weights kept
    accuracy: float  # test accuracy, fraction

    @property
    def sparsity(self) -> float:
        return 1.0 - self.kept


_ANCHORS = (
    # Han et al. 2015, Tables 1-3: 8 % of the weights kept, 1.59 % / 0.77 % error.
    _Anchor("mlp", "Han et al. 2015", 0.08, 0.9841),
    _Anchor("cnn", "Han et al. 2015", 0.08, 0.9923),
    # Han et al. 2016, Deep Compression, Tables 1-3: the same pruning, 1.58 % / 0.74 % error.
    _Anchor("mlp", "Deep Compression 2016", 0.08, 0.9842),
    _Anchor("cnn", "Deep Compression 2016", 0.08, 0.9926),
    # Guo, Yao & Chen 2016, Dynamic Network Surgery, Table 1: 267K -> 4.8K and 431K -> 4.0K parameters.
    _Anchor("mlp", "DNS 2016", 4.8 / 267, 0.9801),
    _Anchor("cnn", "DNS 2016", 4.0 / 431, 0.9909),
    # Molchanov et al. 2017, Sparse Variational Dropout, Table 1: 68x and 280x fewer weights.
    _Anchor("mlp", "Sparse VD 2017", 1 / 68, 0.9808),
    _Anchor("cnn", "Sparse VD 2017", 1 / 280, 0.9925),
)


@dataclass(frozen=True)
class _SizeAnchor:
    """A published compressed model to mark on the error-vs-bytes frontier (chapter 07)."""

    model: str  # mlp | cnn
    source: str  # short citation
    bytes: float  # file bytes as published (KB = 1000 bytes), or derived as `note` says
    error: float  # test error, fraction
    note: str = ""  # how `bytes` was obtained when the paper does not give bytes
    measured_in_bytes: bool = True  # False: a parameter-count ratio applied to the dense fp32 file

    @property
    def accuracy(self) -> float:
        return 1.0 - self.error


# Published dense fp32 sizes in Han et al. 2016 (Table 1): 1070 KB and 1720 KB (266,200 / 431,080 x 4 bytes: the
# paper's KB is 1000 bytes). The ratios of the other papers are applied to these.
_SIZE_ANCHORS = (
    # Han et al. 2016, Deep Compression, Table 1: prune + k-means weight sharing + Huffman coding.
    _SizeAnchor("mlp", "Deep Compression (Han et al. 2016)", 27_000, 0.0158, "1070 KB -> 27 KB (40x)"),
    _SizeAnchor("cnn", "Deep Compression (Han et al. 2016)", 44_000, 0.0074, "1720 KB -> 44 KB (39x)"),
    # Molchanov et al. 2017, Sparse Variational Dropout, Table 1: fewer *parameters*, no file format.
    _SizeAnchor("mlp", "Sparse VD (Molchanov et al. 2017)", 1_070_000 / 68, 0.0192, "68x fewer weights", False),
    _SizeAnchor("cnn", "Sparse VD (Molchanov et al. 2017)", 1_720_000 / 280, 0.0075, "280x fewer weights", False),
    # Louizos et al. 2017, Bayesian Compression (BC-GHS after bit-precision reduction), as its reference code's
    # README states it: ~419x smaller.
    _SizeAnchor("cnn", "Bayesian Compression (Louizos et al. 2017)", 1_720_000 / 419, 0.010, "~419x smaller"),
)

# The goals of chapter 07 (issue 12): the largest file and the largest test error each model should reach.
_COMPRESSION_GOALS = {
    "mlp": ((27_000, 0.0158), (16_000, 0.020)),
    "cnn": ((44_000, 0.0074), (8_000, 0.010)),
}

# The goals of chapter 06 (issue 19): (model, at least this sparsity, at least this test accuracy, the paper whose
# level it is). Judged on 3-seed means of the committed run.
_FRONTIER_GOALS = (
    ("cnn", 0.99, 0.9910, "DNS 2016"),
    ("cnn", 0.995, 0.9920, "Sparse VD 2017 (stretch)"),
    ("mlp", 0.985, 0.9805, "Sparse VD 2017"),
    ("mlp", 0.99, 0.9790, "between DNS and Sparse VD"),
)
# Sparse VD in Molchanov et al. 2017 trains for 200 epochs (their LeNet experiments).
_SPARSE_VD_PAPER_EPOCHS = 200
