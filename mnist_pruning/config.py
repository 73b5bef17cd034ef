"""What every study shares: folders, seeds, data subsets, training precision and the baselines' recipe.

Usage::

    from mnist_pruning.config import RunConfig
    run = RunConfig(seeds=(0, 1, 2))
    run.paths.results                        # results/ (runs/smoke/results with MNIST_PRUNING_SMOKE=1)
    one = run.for_seed(1)                    # what one task of the study runs: one.seed == 1
    data = one.load_data()                   # MNIST as this run splits it (subsets for smoke runs)
    one.baseline_config("cnn")               # TrainConfig.for_model("cnn", seed=1, precision=...)
    RunConfig.smoke()                        # the small configuration of MNIST_PRUNING_SMOKE=1

The sweep (:class:`mnist_pruning.sweep.SweepConfig`), the compression grid
(:class:`mnist_pruning.compress.CompressConfig`) and the chapters (:func:`mnist_pruning.notebook.setup`) extend or
build it, so paths, seeds and subsets are validated and resolved in one place.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from .checks import _check_choice, _check_int, _check_seeds
from .data import _SPLIT_SEED, _VAL_SIZE, MNISTData, _data_root, load_mnist
from .models import MODEL_NAMES
from .settings import SMOKE, _Paths, paths, smoke_mode
from .train import _PRECISIONS, TrainConfig

__all__ = ["RunConfig"]


@dataclass
class RunConfig:
    """Folders, seeds and data of a study; one seed of it is what a single task runs."""

    seed: int | None = None  # one seed; shorthand for seeds=(seed,). After construction: the only seed, or None
    seeds: tuple[int, ...] | None = None  # each trains its own baselines and adds its own rows; None: (seed or 0,)
    subset: int | None = None  # class-balanced training subset (smoke runs); None = all 55,000
    test_subset: int | None = None  # class-balanced test subset; None = all 10,000
    val_subset: int | None = None  # class-balanced part of the validation hold-out; None = all 5,000
    baseline_epochs: dict[str, int] = field(default_factory=dict)  # per model; empty -> TrainConfig.for_model
    precision: str = "auto"  # training arithmetic: "bf16" autocast | "fp32"; "auto" = bf16 where supported
    data_dir: str | None = None  # MNIST root; None = $MNIST_PRUNING_DATA or ./data
    out_dir: str | None = None  # checkpoints and model files; None = runs/
    results_dir: str | None = None  # CSVs; None = results/

    def __post_init__(self) -> None:
        if self.seed is not None:
            _check_int(self.seed, "seed", minimum=0)
        seeds = _check_seeds((0 if self.seed is None else self.seed,) if self.seeds is None else self.seeds)
        if self.seed is not None and seeds != (self.seed,):
            raise ValueError(f"seed={self.seed!r} and seeds={list(seeds)} disagree; give one of them")
        self.seeds = seeds
        self.seed = seeds[0] if len(seeds) == 1 else None
        for name in ("subset", "test_subset", "val_subset"):
            if getattr(self, name) is not None:
                _check_int(getattr(self, name), name, minimum=10)
        for arch, epochs in self.baseline_epochs.items():
            _check_choice(arch, MODEL_NAMES, "model")
            _check_int(epochs, f"baseline epochs of {arch!r}")
        _check_choice(self.precision, _PRECISIONS, "precision")
        if self.precision == "auto":
            self.precision = TrainConfig().precision  # resolved once, so hashes and rows hold what ran

    @classmethod
    def smoke(cls, **overrides) -> RunConfig:
        """The small configuration tests and CI run (:data:`mnist_pruning.settings.SMOKE`)."""
        small = dict(subset=SMOKE.subset, test_subset=SMOKE.test_subset, val_subset=SMOKE.val_subset)
        return cls(**{**small, **overrides})

    @classmethod
    def for_notebook(cls, **overrides) -> RunConfig:
        """This configuration as the chapters run it: with ``MNIST_PRUNING_SMOKE=1`` :meth:`smoke` and the smoke
        baseline epochs (whatever ``baseline_epochs`` says), else as given."""
        if smoke_mode():
            return cls.smoke(**{**overrides, "baseline_epochs": dict.fromkeys(MODEL_NAMES, SMOKE.epochs)})
        return cls(**overrides)

    def run_settings(self) -> dict:
        """This configuration's :class:`RunConfig` fields by name: what a study's config is built from."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(RunConfig)}

    @property
    def paths(self) -> _Paths:
        """The resolved data, runs and results folders (:func:`mnist_pruning.settings.paths`)."""
        return paths(self.data_dir, self.out_dir, self.results_dir)

    def for_seed(self, seed: int) -> RunConfig:
        """This configuration with ``seed`` as its only seed: what one task of a multi-seed study runs."""
        if seed not in self.seeds:
            raise ValueError(f"seed {seed!r} is not one of this run's seeds {list(self.seeds)}")
        return dataclasses.replace(self, seed=seed, seeds=(seed,))

    def one_seed(self) -> int:
        """The seed of a single-seed configuration; a ValueError for several."""
        if self.seed is None:
            raise ValueError(
                f"this run has seeds {list(self.seeds)}; take one with config.for_seed(seed) for a single run"
            )
        return self.seed

    def absolute(self) -> RunConfig:
        """This configuration with its folders resolved to absolute paths, as workers (other processes, other
        machines with a shared filesystem) must see them."""
        p = self.paths
        return dataclasses.replace(
            self,
            data_dir=str(_data_root(p.data).resolve()),
            out_dir=str(p.runs.resolve()),
            results_dir=str(p.results.resolve()),
        )

    def baseline_config(self, arch: str) -> TrainConfig:
        """The dense baseline's recipe for ``arch`` with this run's seed, precision and epochs."""
        overrides: dict = {"seed": self.one_seed(), "precision": self.precision}
        if arch in self.baseline_epochs:
            overrides["epochs"] = self.baseline_epochs[arch]
        return TrainConfig.for_model(arch, **overrides)

    def data_key(self) -> dict:
        """What decides the data a model trained and was measured on (part of every configuration hash)."""
        return {
            "subset": self.subset,
            "test_subset": self.test_subset,
            "val_subset": self.val_subset,
            "split": [_VAL_SIZE, _SPLIT_SEED],
        }

    def load_data(self) -> MNISTData:
        """MNIST as this configuration (one seed) splits it, on the CPU."""
        return load_mnist(
            self.paths.data,
            subset=self.subset,
            test_subset=self.test_subset,
            seed=self.one_seed(),
            val_size=_VAL_SIZE if self.val_subset is None else self.val_subset,
        )
