"""Every figure of the book, as functions (so tests reach them and notebooks stay short), and how they are saved.

Usage::

    import matplotlib.pyplot as plt
    from mnist_pruning import plots
    from mnist_pruning.results import load_results
    fig = plots.learning_curves({"mlp": history})
    fig = plots.accuracy_vs_sparsity(load_results(""), "mlp")
    plots.save_figure(fig, "results", "mlp_accuracy_vs_sparsity")   # PNG + SVG, atomically, only if changed
    plt.show()

Every figure function returns the ``matplotlib.figure.Figure`` it drew and never calls ``show``/``savefig``.
Figures are drawn for the book's content width (7 in) with no text below 8 pt there, panels stacked rather than
squeezed, legends below the axes (off the data), and one colour per method in every figure (all set in
:mod:`.style`); :mod:`.pruning` holds the pruning chapters' figures, :mod:`.frontier` chapter 06's frontier curve,
:mod:`.compression` chapter 07's.
The comparison figures read a typed results DataFrame (:func:`mnist_pruning.results.load_results`); a *series*
is one line (the method, plus the schedule when not one-shot), N:M rows are points labelled with their pattern.
"""

from . import compression, frontier, pruning, style
from .compression import *  # noqa: F403 - each module's __all__ is what this package exports
from .frontier import *  # noqa: F403
from .pruning import *  # noqa: F403
from .style import *  # noqa: F403

__all__ = pruning.__all__ + frontier.__all__ + compression.__all__ + style.__all__
