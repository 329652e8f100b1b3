"""The gradient checker itself: it must pass right backward passes and catch wrong ones.

The layers here are written in the test, some deliberately broken, with gradients known
in closed form.
"""

from __future__ import annotations

import numpy as np
import pytest

from abp_np.gradcheck import (
    GradcheckError,
    assert_gradients_close,
    away_from_kinks,
    check_layer,
    compare_gradients,
    directional_derivative,
    numerical_gradient,
)
from abp_np.layers import BatchNorm2d, ReLU

F64 = np.float64


class Scale:
    """y = w * x elementwise with a parameter w of x's per-example shape.

    dx = w dy,  dw = sum_n x dy. ``bug`` selects a deliberate mistake.
    """

    def __init__(self, shape, rng, bug=None):
        self.dtype = np.dtype(F64)
        self.params = {"weight": rng.standard_normal(shape)}
        self.grads = {"weight": np.zeros(shape)}
        self.buffers = {}
        self.bug = bug
        self._x = None

    def forward(self, x):
        self._x = x.copy()
        return self.params["weight"] * x

    def backward(self, dy, need_param_grads=True):
        dx = self.params["weight"] * dy
        if self.bug == "dx-entry":  # one entry of dx off by 10 %
            dx[(0,) * dx.ndim] *= 1.1
        if self.bug == "dx-shape":
            dx = dx[:, :-1]
        if self.bug == "dx-nan":
            dx[(0,) * dx.ndim] = np.nan
        if need_param_grads:
            dw = (self._x * dy).sum(axis=0)
            if self.bug == "dw-sign":
                dw = -dw
            self.grads["weight"][...] = dw
        return dx


class Roll:
    """y = x shifted by one place along the last axis (a permutation of the entries).

    The right backward pass shifts dy back. The broken one forgets to, which returns the
    right SUM of dx: with an all-ones upstream gradient it would look correct.
    """

    def __init__(self, broken):
        self.dtype = np.dtype(F64)
        self.params, self.grads = {}, {}
        self.broken = broken

    def forward(self, x):
        return np.roll(x, 1, axis=-1)

    def backward(self, dy, need_param_grads=True):
        return dy.copy() if self.broken else np.roll(dy, -1, axis=-1)


def test_passes_a_correct_layer_and_reports_every_gradient():
    rng = np.random.default_rng(0)
    layer = Scale((3, 4), rng)
    report = check_layer(layer, rng.standard_normal((2, 3, 4)), rng=rng)
    assert report.passed
    assert [c.name for c in report.comparisons] == ["x", "weight"]
    assert report["x"].n_checked == 24 and report["weight"].n_checked == 12
    assert report["x"].max_abs_err < 1e-8
    assert "passed" in str(report) and "dweight" in str(report)
    assert assert_gradients_close(layer, rng.standard_normal((2, 3, 4))).passed


def test_catches_a_wrong_input_gradient_and_says_where():
    rng = np.random.default_rng(1)
    layer = Scale((3, 4), rng, bug="dx-entry")
    report = check_layer(layer, rng.standard_normal((2, 3, 4)), rng=rng)
    assert not report.passed
    assert [c.name for c in report.failures] == ["x"]
    bad = report["x"]
    assert bad.n_failed == 1 and bad.n_checked == 24
    assert bad.worst_index == (0, 0, 0)
    assert bad.analytic_at_worst == pytest.approx(1.1 * bad.numeric_at_worst, rel=1e-6)
    assert bad.max_rel_err == pytest.approx(0.1 / 1.1, rel=1e-4)
    with pytest.raises(GradcheckError, match=r"FAIL dx \(2, 3, 4\).*1/24 failed.*\(0, 0, 0\)"):
        report.raise_if_failed()


def test_catches_a_wrong_parameter_gradient():
    rng = np.random.default_rng(2)
    layer = Scale((5,), rng, bug="dw-sign")
    with pytest.raises(AssertionError, match=r"FAIL dweight \(5,\) full: 5/5 failed") as info:
        assert_gradients_close(layer, rng.standard_normal((3, 5)), rng=rng)
    report = info.value.report
    assert report["x"].passed and not report["weight"].passed


def test_random_upstream_gradient_catches_what_ones_would_hide():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 6))
    # the broken backward is right for an all-ones upstream gradient ...
    np.testing.assert_array_equal(Roll(True).backward(np.ones((2, 6))), np.ones((2, 6)))
    # ... but not for the random one the checker draws
    assert check_layer(Roll(False), x, rng=rng).passed
    report = check_layer(Roll(True), x, rng=rng)
    assert not report.passed and report["x"].n_failed > 6


def test_wrong_gradient_shape_fails_with_a_note():
    rng = np.random.default_rng(4)
    report = check_layer(Scale((3,), rng, bug="dx-shape"), rng.standard_normal((2, 3)))
    assert not report.passed
    assert "dx has shape (2, 2), expected (2, 3)" in str(report)


def test_nan_gradient_fails():
    rng = np.random.default_rng(5)
    report = check_layer(Scale((3,), rng, bug="dx-nan"), rng.standard_normal((2, 3)))
    assert report["x"].n_failed == 1 and report["x"].worst_index == (0, 0)


def test_need_param_grads_false_checks_only_dx():
    rng = np.random.default_rng(6)
    report = check_layer(
        Scale((4,), rng, bug="dw-sign"), rng.standard_normal((2, 4)), need_param_grads=False
    )
    assert report.passed and [c.name for c in report.comparisons] == ["x"]


def test_directional_mode_for_big_tensors():
    rng = np.random.default_rng(7)
    good = check_layer(
        Scale((40,), rng), rng.standard_normal((3, 40)), max_full_size=10, n_directions=3
    )
    assert good.passed
    assert good["x"].mode == good["weight"].mode == "directional"
    assert good["x"].n_checked == 3 and good["weight"].shape == (40,)
    bad = check_layer(
        Scale((40,), rng, bug="dw-sign"), rng.standard_normal((3, 40)), max_full_size=10
    )
    assert bad["x"].passed and not bad["weight"].passed
    assert "worst direction" in str(bad)


def test_leaves_input_parameters_and_buffers_as_they_were():
    rng = np.random.default_rng(8)
    layer = Scale((3,), rng)
    w = layer.params["weight"].copy()
    x = rng.standard_normal((2, 3))
    x0 = x.copy()
    check_layer(layer, x)
    np.testing.assert_array_equal(layer.params["weight"], w)
    np.testing.assert_array_equal(x, x0)
    bn = BatchNorm2d(2, dtype=F64)
    bn.buffers["running_mean"][...] = [0.5, -0.5]
    assert check_layer(bn, rng.standard_normal((2, 2, 2, 2))).passed
    np.testing.assert_array_equal(bn.buffers["running_mean"], [0.5, -0.5])
    np.testing.assert_array_equal(bn.buffers["running_var"], [1.0, 1.0])


def test_relu_kinks_are_moved_away():
    x = np.array([[0.0, -1e-9, 1e-9, 1.0, -1.0]])
    report = check_layer(ReLU(dtype=F64), x, rng=np.random.default_rng(9))
    assert report.passed
    assert "3 input entries moved" in str(report)
    # without the nudge, the central difference at 0 averages the two slopes: it fails
    report = check_layer(ReLU(dtype=F64), x, rng=np.random.default_rng(9), kink_margin=0)
    assert not report.passed and report["x"].worst_index[1] in (0, 1, 2)


def test_away_from_kinks():
    x = np.array([-2.0, -1e-4, -0.0, 0.0, 3e-4, 5e-3])
    y = away_from_kinks(x, margin=1e-3)
    np.testing.assert_array_equal(y, [-2.0, -1e-3, 1e-3, 1e-3, 1e-3, 5e-3])
    assert x[1] == -1e-4  # the input is not modified
    with pytest.raises(ValueError, match="margin"):
        away_from_kinks(x, margin=0.0)


def test_numerical_gradient_of_a_known_function():
    rng = np.random.default_rng(10)
    x = rng.standard_normal((3, 2))
    x0 = x.copy()
    c = rng.standard_normal((3, 2))
    grad = numerical_gradient(lambda: float(np.sum(c * x**3)), x)
    np.testing.assert_allclose(grad, 3 * c * x0**2, rtol=1e-7, atol=1e-9)
    np.testing.assert_array_equal(x, x0)  # restored exactly


def test_directional_derivative_of_a_known_function():
    rng = np.random.default_rng(11)
    x = rng.standard_normal(5)
    v = rng.standard_normal(5)
    d = directional_derivative(lambda: float(np.sum(np.sin(x))), x, v)
    assert d == pytest.approx(float(np.cos(x) @ v), rel=1e-8)
    with pytest.raises(ValueError, match="shape"):
        directional_derivative(lambda: 0.0, x, v[:3])


def test_compare_gradients_tolerance_rule():
    c = compare_gradients(
        "w", np.array([1.0, 2.0, 3.0]), np.array([1.0, 2.0 + 1e-3, 3.0]), rtol=1e-4, atol=0.0
    )
    assert c.n_failed == 1 and c.worst_index == (1,)
    assert c.max_abs_err == pytest.approx(1e-3)
    assert compare_gradients("w", np.array([1.0]), np.array([1.0 + 1e-6]), rtol=1e-5).passed


def test_rejects_float32():
    rng = np.random.default_rng(12)
    with pytest.raises(ValueError, match="float64"):
        check_layer(ReLU(), rng.standard_normal((2, 3)).astype(np.float32))
    with pytest.raises(ValueError, match="float64"):
        check_layer(ReLU(), rng.standard_normal((2, 3)))  # a float32 layer
    with pytest.raises(ValueError, match="float64"):
        numerical_gradient(lambda: 0.0, np.zeros(3, np.float32))
