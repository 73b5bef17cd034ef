"""Deep Compression on a pruned model: k-means weight sharing, centroid fine-tuning, entropy-coded files.

Usage::

    from mnist_pruning import compress
    bits = compress.layer_bits("cnn", bits_conv=8, bits_fc=5)   # {"conv1": 8, "conv2": 8, "fc1": 5, "fc2": 5}
    compress.share_weights(pruned_model, bits)                   # weight = codebook[index] * keep (parametrize)
    compress.fine_tune_centroids(pruned_model, mnist, TrainConfig(epochs=1, lr=0.01))   # zeros stay zero
    coded = compress.unshare(pruned_model)                       # -> CodedModel (codebooks, indices, positions)
    n_bytes = compress.save_coded(coded, "runs/cnn-99.mnpz")     # entropy-coded file (constriction's ANS coder)
    model = compress.load_model("runs/cnn-99.mnpz")              # CRC checked, rebuilt with models.build_model
    compress.size_breakdown(compress.encode(coded))              # bytes on values / positions / codebooks / ...

or one whole point of the pipeline (baseline -> gradual pruning -> sharing -> fine-tuning -> file -> decode ->
accuracy of the decoded model): :func:`compress_point`; the grid of both models: :func:`run_compression_sweep`;
from the shell: ``mnist-pruning compress --model mlp --sparsity 0.95 --bits-fc 5`` (``--sweep`` for the grid).

The steps (Han et al. 2016, "Deep Compression", sections 3-4), one module each:

- :mod:`.sharing` - bits per layer, k-means weight sharing as a ``torch.nn.utils.parametrize``
  reparametrisation (:class:`_SharedWeight`), centroid fine-tuning (each centroid's SGD step scaled by
  ``k / kept`` per layer), and :func:`unshare` / :func:`_snapshot` to a :class:`_CodedModel` (:mod:`.coded`).
- :mod:`.coder` - the entropy coder: ``constriction``'s ANS coder, order-0 models from counts stored in the
  file, for the cluster indices and for the positions (bitmask or gaps, whichever is smaller per layer).
- :mod:`.fileformat` - the ``mnist-pruning-coded/1`` file (its docstring is the specification), CRC-32 checked.
- :mod:`.limits` - the information limit of a file's content (:func:`_information_limit`).
- :mod:`.grid` - :class:`CompressConfig` and the grid of the full run; :mod:`.report` - chapter 07's tables.
"""

from . import coded, fileformat, grid, limits, report, sharing
from .coded import *  # noqa: F403 - each module's __all__ is what this package exports
from .fileformat import *  # noqa: F403
from .grid import *  # noqa: F403
from .limits import *  # noqa: F403
from .report import *  # noqa: F403
from .sharing import *  # noqa: F403

__all__ = coded.__all__ + sharing.__all__ + fileformat.__all__ + limits.__all__ + grid.__all__ + report.__all__
