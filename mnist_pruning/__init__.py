"""mnist_pruning: how far can LeNet-300-100 and LeNet-5 be pruned on MNIST, and what does it really buy?

Usage::

    from mnist_pruning import sparsity as sp              # the reusable core: works on any torch model
    sp.sparsify_(model, "global", 0.9)                     # magnitude masks (torch.nn.utils.prune)
    small = sp.shrink(model, 0.5)                          # structured: units cut out, outputs kept equal

    from mnist_pruning.data import load_mnist              # the MNIST experiments around it
    from mnist_pruning.train import TrainConfig, train
    from mnist_pruning.sweep import SweepConfig, run_sweep

Where each concept lives:

- the pruning core, torch-only (:mod:`mnist_pruning.sparsity`): ``unstructured`` (``sparsify_``: l1, global,
  N:M, with a layer filter), ``nm`` (``NMPruning``), ``structured`` (generic surgery on chains of Linear /
  Conv2d), ``compact`` (the compact sparse file format), ``measure`` (the weights a model computes with,
  sparsity, parameters, FLOPs, latency), ``inference`` (CPU inference on CSR kernels where they measure faster);
- argument checks: ``checks``; file writes and integrity-checked loads: ``files``;
- the experiments: ``models`` (the two LeNets), ``data`` (verified MNIST in memory), ``train`` (train /
  fine-tune / evaluate / checkpoints), ``schedules`` (one-shot, gradual), ``sensitivity`` (per-layer ratios),
  ``lottery`` (lottery tickets), ``sweep`` (prune -> fine-tune -> measure, one row per experiment and seed),
  ``parallel`` (where the sweep's tasks run: in process, local worker processes, a Dask cluster);
  ``compress`` (k-means weight sharing, centroid fine-tuning, entropy-coded files, their grid);
- the results: ``results`` (the CSV schema, appending, reading), ``compare`` (the comparison tables),
  ``plots`` (every figure, and saving them), ``references`` (published numbers);
- publishing: ``notebook`` (what the chapters call first), ``fullrun`` (the full run), ``book`` (the Jupyter
  Book), ``settings`` (paths, smoke mode), ``cli`` (the ``mnist-pruning`` command).

Importing the package has no side effects and imports nothing heavy; import the modules you use.
"""

__version__ = "0.1.0"
