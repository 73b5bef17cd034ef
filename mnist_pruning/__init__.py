"""mnist_pruning: how far can LeNet-300-100 and LeNet-5 be pruned on MNIST, and what does it really buy?

Usage::

    from mnist_pruning.data import load_mnist
    from mnist_pruning.train import TrainConfig, train
    from mnist_pruning.pruning import prune_unstructured, bake_in
    from mnist_pruning.sweep import SweepConfig, run_sweep

Modules: ``models`` (the two networks), ``data`` (verified MNIST in memory), ``train`` (train / fine-tune /
evaluate), ``pruning`` (l1 / global magnitude), ``nm`` (N:M patterns), ``structured`` (neuron / filter removal with
layer surgery), ``export`` (compact sparse files), ``metrics`` (sparsity, FLOPs, latency), ``sweep`` (the CSVs),
``cli`` (the ``mnist-pruning`` command). Importing the package has no side effects.
"""

__version__ = "0.1.0"
