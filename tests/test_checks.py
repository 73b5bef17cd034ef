"""mnist_pruning.checks: every check returns the value in its canonical type or raises a ValueError naming it."""

from __future__ import annotations

import re

import pytest

from mnist_pruning.checks import (
    _check_choice,
    _check_choices,
    _check_fraction,
    _check_int,
    _check_n_of_m,
    _check_ratio,
)


def test_good_values_come_back_in_their_canonical_type():
    assert _check_ratio(0) == 0.0 and isinstance(_check_ratio(0), float)
    assert _check_fraction(1, "x") == 1.0
    assert _check_int(3, "epochs") == 3 and _check_int(0, "seed", minimum=0) == 0
    assert _check_choice("mlp", ("mlp", "cnn"), "model") == "mlp"
    assert _check_choices("mlp", ("mlp", "cnn"), "model") == ("mlp",)  # a bare string is one value
    assert _check_choices(["cnn", "mlp"], ("mlp", "cnn"), "model") == ("cnn", "mlp")
    assert _check_n_of_m(2, 4) == (2, 4)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: _check_ratio(1.0), "ratio must be in [0, 1) (the fraction of weights removed), got 1.0"),
        (lambda: _check_ratio(1.5, "amount", what="units"), "amount must be in [0, 1) (the fraction of units"),
        (lambda: _check_ratio(float("inf")), "got inf"),
        (lambda: _check_ratio(False), "got False"),
        (lambda: _check_fraction(1.5, "momentum"), "momentum must be a number in [0, 1], got 1.5"),
        (lambda: _check_fraction("0.5", "lr"), "got '0.5'"),
        (lambda: _check_int(0, "epochs"), "epochs must be a positive integer, got 0"),
        (lambda: _check_int(-1, "seed", minimum=0), "seed must be an integer >= 0, got -1"),
        (lambda: _check_int(2.0, "epochs"), "got 2.0"),
        (lambda: _check_int(True, "epochs"), "got True"),
        (lambda: _check_choice("vgg", ("mlp", "cnn"), "model"), "unknown model 'vgg'; allowed: 'mlp', 'cnn'"),
        (lambda: _check_choices(["mlp", "vgg"], ("mlp", "cnn"), "model"), "unknown model 'vgg'"),
        (lambda: _check_n_of_m(4, 4), "n=4"),
        (lambda: _check_n_of_m(1, 1), "m=1"),
        (lambda: _check_n_of_m(True, 4), "n=True"),
    ],
)
def test_bad_values_raise_a_value_error_naming_them(call, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        call()
