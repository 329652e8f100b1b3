"""The one switch of the speed routes (``abp_np.backend.using``).

Expected values are the settings written in each test, never read back from the code that sets
them.
"""

from __future__ import annotations

import pytest

from abp_np import backend
from abp_np.backend import Switches, switches, using, using_kernels
from abp_np.fast import winograd

DEFAULT = Switches(cuda=True, c=True, winograd="auto", cpu_forms=True)


def test_defaults():
    """Outside any block: every route on, Winograd where it pays (the test run does not set
    ABP_CPU_KERNELS=0; tests/test_winograd.py checks that variable in a fresh interpreter)."""
    assert switches() == DEFAULT


def test_using_sets_what_it_names_and_restores_everything():
    with using(cuda=False) as inside:
        assert inside == Switches(cuda=False, c=True, winograd="auto", cpu_forms=True)
        assert switches() == inside
        with using(c=False, winograd="on", cpu_forms=False):
            assert switches() == Switches(cuda=False, c=False, winograd="on", cpu_forms=False)
        assert switches() == inside
    assert switches() == DEFAULT


def test_using_restores_after_an_exception():
    with pytest.raises(KeyError), using(cuda=False, c=False, winograd="off", cpu_forms=False):
        raise KeyError("inside")
    assert switches() == DEFAULT


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"cuda": 1}, "cuda must be True or False"),
        ({"c": "off"}, "c must be True or False"),
        ({"cpu_forms": None, "winograd": "sometimes"}, "winograd must be one of"),
        ({"winograd": True}, "winograd must be one of"),
    ],
)
def test_using_rejects_bad_values_and_changes_nothing(kwargs, match):
    with pytest.raises(ValueError, match=match), using(**kwargs):
        pass
    assert switches() == DEFAULT


def test_using_takes_keywords_only():
    with pytest.raises(TypeError):
        using(False)  # type: ignore[misc]


def test_the_older_names_are_the_same_switch():
    """using_kernels(flag) sets cuda and c; winograd.using(mode) sets winograd."""
    with using_kernels(False):
        assert switches() == Switches(cuda=False, c=False, winograd="auto", cpu_forms=True)
        assert not backend.kernels_enabled()
        with winograd.using("off"):
            assert winograd.mode() == "off" == switches().winograd
    assert switches() == DEFAULT
