"""The benchmark runs end to end in a tiny setting and reports what it promises.

Nothing here asserts anything about speed: these tests check that ``python -m abp_np.bench``
works, that its JSON line has the documented fields, and that the analytic FLOP count
matches a count written out by hand.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from abp_np.tools import bench

from conftest import subprocess_env


def _run(cwd, *args: str) -> dict:
    cmd = [sys.executable, "-m", "abp_np.tools.bench", *args]
    out = subprocess.run(
        cmd, capture_output=True, text=True, timeout=300, cwd=cwd, env=subprocess_env()
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_cli_json_has_the_documented_fields(tmp_path):
    res = _run(tmp_path, "--workload", "small32", "--iterations", "1", "--batch", "4", "--json")
    for key in ("sec_per_iter", "images_per_sec", "gflops", "gemm_ceiling_gflops", "peak_mib"):
        assert key in res, key
    assert res["sec_per_iter"] > 0
    assert res["images_per_sec"] == pytest.approx(4 / res["sec_per_iter"])
    assert res["batch"] == 4 and res["steps"] == 10
    assert "ABP.alternate" in res["abp_source"]


def test_cli_json_reports_gemm_share_cores_busy_and_threads(tmp_path):
    res = _run(tmp_path, "--workload", "small32", "--iterations", "1", "--batch", "4", "--json")
    assert 0 < res["gemm_share"] < 1
    assert 0 < res["cpu_per_wall"] <= res["cores"] + 0.5  # CPU seconds of all threads / wall
    assert res["abp_threads"] >= 1 and isinstance(res["blas_short_spin"], bool)


def test_gemm_clock_times_the_gemms_and_puts_everything_back():
    from abp_np import functional as F
    from abp_np.fast import columns, winograd

    saved = (winograd._gemms, columns.np, F.linear_forward, F.linear_backward)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 8, 6, 6)).astype(np.float32)
    w = rng.standard_normal((8, 4, 5, 5)).astype(np.float32)
    a = rng.standard_normal((9, 64, 64)).astype(np.float32)
    with bench.gemm_clock() as clock:
        assert clock.seconds == 0.0
        y = columns.conv_transpose2d_columns(x, w, None, (2, 2), (2, 2), (12, 12))
        after_columns = clock.seconds
        m = winograd._gemms(a, a)
        after_winograd = clock.seconds
        F.linear_forward(x.reshape(2, -1), rng.standard_normal((3, 288)).astype(np.float32), None)
    assert 0 < after_columns < after_winograd < clock.seconds
    assert np.array_equal(m, np.matmul(a, a))  # the wrapped calls still compute
    assert y.shape == (2, 4, 12, 12)
    assert (winograd._gemms, columns.np, F.linear_forward, F.linear_backward) == saved


def test_gemm_clock_times_only_the_thread_that_made_it():
    """Worker threads run their share of the same steps at the same time: not added again."""
    import threading

    from abp_np.fast import winograd

    a = np.random.default_rng(1).standard_normal((9, 64, 64)).astype(np.float32)
    out = []
    with bench.gemm_clock() as clock:
        t = threading.Thread(target=lambda: out.append(winograd._gemms(a, a)))
        t.start()
        t.join()
        assert clock.seconds == 0.0
        winograd._gemms(a, a)
    assert clock.seconds > 0
    assert np.array_equal(out[0], np.matmul(a, a))


def test_compare_torch_runs_the_same_network():
    pytest.importorskip("torch")
    res = bench.main(
        [
            "--workload",
            "small32",
            "--iterations",
            "1",
            "--batch",
            "4",
            "--compare-torch",
            "--no-memory",
        ]
    )
    assert res["torch_sec_per_iter"] > 0
    assert res["ratio_abp_over_torch"] == pytest.approx(
        res["sec_per_iter"] / res["torch_sec_per_iter"]
    )
    assert res["ratio_best_abp_over_torch"] == pytest.approx(
        res["sec_per_iter_min"] / res["torch_sec_per_iter_min"]
    )
    # the two libraries compute the same function from the same weights and z
    assert res["max_abs_forward_difference"] < 1e-4


def test_flop_count_by_hand():
    g = bench.WORKLOADS["small32"].build(np.random.default_rng(0))
    n = 4
    linear = n * 32 * 128 * 16
    deconvs = [n * 128 * 64 * 25 * 4 * 4, n * 64 * 32 * 25 * 8 * 8, n * 32 * 1 * 25 * 16 * 16]
    macs = [m for _, m in bench.gemm_macs(g, n, (32,))]
    assert macs == [linear, *deconvs]
    steps = 3
    expected = 2 * (linear + sum(deconvs)) * (2 * steps + 3)
    assert bench.iteration_flops(g, n, (32,), steps) == expected


def test_sound_flop_count_uses_the_1d_geometry():
    g = bench.WORKLOADS["sound60k"].build(np.random.default_rng(0))
    macs = [m for _, m in bench.gemm_macs(g, 1, (1, 60))]
    assert macs == [1 * 256 * 25 * 60, 256 * 128 * 25 * 600, 128 * 1 * 25 * 6000]


def test_breakdown_and_sweep_tables(capsys):
    res = bench.main(["--workload", "small32", "--batch", "2", "--breakdown", "--repeats", "1"])
    assert len(res["breakdown"]) == 12
    assert all(r["fwd"] > 0 and r["learn_fwd"] > 0 for r in res["breakdown"])
    assert all(r["learn_dx"] >= 0 and r["dW"] >= 0 for r in res["breakdown"])
    assert "implied seconds per iteration" in capsys.readouterr().out


def test_sweep_chart_is_saved(tmp_path, capsys):
    Image = pytest.importorskip("PIL.Image")
    from abp_np.tools.plot import COLOURS

    path = tmp_path / "batch.png"
    res = bench.main(
        ["--workload", "small32", "--batch", "2", "--sweep", "batch", "--iterations", "1"]
        + ["--plot", str(path)]
    )
    assert [r["value"] for r in res["sweep"]["rows"]] == [2, 4]
    assert f"chart: {path}" in capsys.readouterr().out
    picture = np.asarray(Image.open(path).convert("RGB"))
    assert picture.shape == (400, 640, 3)
    # both series are drawn: the measured points and the least-squares line
    for colour in COLOURS[:2]:
        assert (picture == colour).all(axis=-1).sum() > 20, colour


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--plot", "{tmp}/a.png"], "use it with --sweep"),
        (["--breakdown", "--plot", "{tmp}/a.gif"], "ending in .png"),
        (["--sweep", "batch", "--plot", "{tmp}/a.jpg"], "ending in .png"),
        (["--sweep", "batch", "--plot", "{tmp}/no/such/a.png"], "does not exist"),
    ],
)
def test_bad_plot_target_is_refused_before_timing(tmp_path, extra, message, monkeypatch):
    monkeypatch.setattr(bench, "measure", lambda *a, **k: pytest.fail("timed before refusing"))
    argv = ["--workload", "small32", "--iterations", "1"]
    argv += [a.replace("{tmp}", str(tmp_path)) for a in extra]
    with pytest.raises(SystemExit, match=message):
        bench.main(argv)


def test_breakdown_times_the_learning_columns_as_the_learning_step(monkeypatch):
    """learn_fwd, learn_dx and dW run in fixed_weights(learning=True) blocks nested in a
    Langevin block that has run a forward pass, as ABP.alternate's learning passes do, so that
    each layer takes the route (and finds the kept U) the learning step does."""
    from abp_np.generator import Generator

    blocks = []
    real = Generator.fixed_weights

    def spy(self, learning=False):
        blocks.append((learning, self._fixed))
        return real(self, learning)

    monkeypatch.setattr(Generator, "fixed_weights", spy)
    bench.main(["--workload", "small32", "--batch", "2", "--breakdown", "--repeats", "1"])
    # per layer: the Langevin block; learn_fwd's warm-up and timed call, and the block of
    # learn_dx and dW: each a Langevin block with a learning block inside
    assert blocks.count((False, False)) == 12 * (1 + 3)
    assert blocks.count((True, True)) == 12 * 3
    assert len(blocks) == 12 * 7


def test_breakdown_chart_sums_each_layers_passes(tmp_path):
    Image = pytest.importorskip("PIL.Image")
    path = tmp_path / "layers.png"
    argv = ["--workload", "small32", "--batch", "2", "--breakdown", "--repeats", "1"]
    res = bench.main([*argv, "--plot", str(path)])
    rows = res["breakdown"]
    ms = bench.layer_ms_per_iteration(rows, 10)["abp_np"]
    r = rows[-3]  # the last transposed convolution, written out by hand
    by_hand = 10 * (r["fwd"] + r["dx"]) + r["learn_fwd"] + r["learn_dx"] + r["dW"]
    assert ms[-3] == pytest.approx(1e3 * by_hand)
    assert len(ms) == len(rows) == 12
    picture = np.asarray(Image.open(path).convert("RGB"))
    assert picture.shape == (40 + 24 * 12 + 50, 760, 3)


def test_pixel_sweep_needs_a_fully_convolutional_workload():
    with pytest.raises(ValueError, match="fully convolutional"):
        bench.main(["--workload", "small32", "--sweep", "pixels", "--iterations", "1"])


@pytest.mark.parametrize("mode", ["on", "off"])
def test_winograd_switch_is_applied_and_reported(mode, monkeypatch):
    """--winograd reaches the layers (the Winograd path counted through winograd.forward)."""
    from abp_np.fast import winograd

    calls = []
    real = winograd.forward
    monkeypatch.setattr(winograd, "forward", lambda *a, **k: calls.append(1) or real(*a, **k))
    res = bench.main(
        [
            "--workload",
            "small32",
            "--iterations",
            "1",
            "--batch",
            "4",
            "--no-memory",
            "--winograd",
            mode,
        ]
    )
    assert res["winograd"] == mode
    assert isinstance(res["cpu_kernels"], bool)
    assert (len(calls) > 0) == (mode == "on")
    assert winograd.mode() == "auto"  # the switch does not outlive the run


def test_winograd_steps_times_every_step_of_an_iteration(capsys):
    """--winograd-steps: one row per step and operand shapes. Per Winograd layer and iteration,
    10 Langevin steps + 1 learning step give 11 forward passes (an input transform, GEMMs by U,
    an output transform each: one block of 4 examples) and 11 input gradients (output adjoint,
    GEMMs, input adjoint), and the learning step's weight gradient transforms the input again
    and runs its own GEMMs. The timers are removed after."""
    from abp_np.backend import using
    from abp_np.fast import winograd

    before = {name: getattr(winograd, name) for name in bench.WINOGRAD_STEPS}
    args = "--workload small32 --batch 4 --iterations 2 --winograd-steps --winograd on"
    with using(threads=1):  # on several threads the batch is cut: each step runs per range
        res = bench.main(args.split())
    assert all(getattr(winograd, name) is fn for name, fn in before.items())
    rows = res["winograd_steps"]
    calls: dict[str, int] = {}
    for r in rows:
        calls[r["step"]] = calls.get(r["step"], 0) + r["calls"]
        assert r["ms_median"] >= r["ms_min"] > 0
        if r["step"] == "GEMMs by U":
            a, b = r["shapes"]
            assert a[0] == b[0] and a[0] in (16, 36)  # one product per position
            assert a[2] == b[1] and r["gflops_median"] > 0
    layers = calls["output transform"] // (2 * 11)
    assert layers >= 1
    assert calls == {
        "input transform": 2 * 12 * layers,  # 11 forward passes + the weight gradient
        "GEMMs by U": 2 * 23 * layers,  # 11 forward, 11 input gradient, 1 weight gradient
        "output transform": 2 * 11 * layers,
        "output adjoint": 2 * 11 * layers,
        "input adjoint": 2 * 11 * layers,
    }
    assert "ms per iteration" in capsys.readouterr().out


def test_layer_clock_times_every_layer_inside_iterations(capsys):
    """--layer-clock: per layer, 11 forward and 11 backward calls per iteration (10 Langevin
    steps and 1 learning step), each with its wall time and cores busy; one more row for what
    is outside the layers; the layers' own methods are back after."""
    from abp_np.tools.bench import WORKLOADS

    res = bench.main("--workload small32 --batch 4 --iterations 2 --layer-clock".split())
    clock = res["layer_clock"]
    g = WORKLOADS["small32"].build(np.random.default_rng(0))
    rows = clock["rows"]
    assert len(rows) == 2 * len(g.layers) + 1
    assert {r["pass"] for r in rows[:-1]} == {"forward", "backward"}
    assert rows[-1]["layer"] == "outside the layers"
    for r in rows[:-1]:
        assert r["calls_per_iteration"] == 11
        assert r["ms_per_iteration"] > 0
        assert r["cpu_per_wall"] >= 0  # (CPU time of all threads: may exceed the cores a
        # little on short calls, the kernel crediting the other threads' time in steps)
    total = sum(r["ms_per_iteration"] for r in rows)
    assert total == pytest.approx(clock["ms_per_iteration"], rel=1e-6)
    assert "idle core time" in capsys.readouterr().out


def test_layer_clock_leaves_no_timer_on_the_layers():
    args = bench._parser().parse_args("--workload small32 --batch 2 --iterations 1".split())
    saved = bench.setup
    made = []

    def setup(a, latent=None):
        out = saved(a, latent)
        made.append(out[0])
        return out

    bench.setup = setup
    try:
        bench.layer_clock(args)
    finally:
        bench.setup = saved
    assert all("forward" not in vars(layer) for layer in made[0].layers)
    assert all("backward" not in vars(layer) for layer in made[0].layers)


def test_ab_alternates_the_settings_and_restores_them(capsys):
    """--ab: as many iterations under each setting, the ratio their medians' ratio; the
    switch in force before is in force after."""
    from abp_np.backend import switches

    before = switches()
    res = bench.main(
        "--workload small32 --batch 2 --iterations 3 --ab threads=1,winograd=off".split()
    )
    r = res["ab"]
    assert r["settings"] == {"threads": 1, "winograd": "off"}
    assert len(r["seconds_a"]) == len(r["seconds_b"]) == 3
    assert min(r["seconds_a"] + r["seconds_b"]) > 0
    assert r["sec_per_iter_a"] == sorted(r["seconds_a"])[1]
    assert r["ratio_b_over_a"] == pytest.approx(r["sec_per_iter_b"] / r["sec_per_iter_a"])
    assert switches() == before
    assert "B / A" in capsys.readouterr().out


def test_ab_in_processes_runs_each_arm_in_fresh_processes_under_its_settings(capsys):
    """--ab with --processes: N pairs of child processes, the B children under --ab's settings
    (each child reports its own thread count outside the GEMMs), the order swapped every pair;
    the ratio is that of the medians of the children's medians."""
    res = bench.main(
        "--workload small32 --batch 2 --iterations 1 --threads 2 --ab threads=1 --processes 2".split()
    )
    r = res["ab"]
    assert r["settings"] == {"threads": 1} and r["processes"] == 2
    assert len(r["seconds_a"]) == len(r["seconds_b"]) == 2
    assert min(r["seconds_a"] + r["seconds_b"]) > 0
    assert r["abp_threads_b"] == [1, 1]  # the setting reached the B children only
    assert len(r["abp_threads_a"]) == 2
    assert 1 not in r["abp_threads_a"] or os.cpu_count() == 1  # A kept the default threads
    assert r["sec_per_iter_b"] == pytest.approx(sum(r["seconds_b"]) / 2)
    out = capsys.readouterr().out
    assert out.index("pair 1/2: A") < out.index("pair 1/2: B")
    assert out.index("pair 2/2: B") < out.index("pair 2/2: A")
    assert "processes' medians" in out


@pytest.mark.parametrize("torch_side", [False, True])
def test_runs_repeats_the_plain_run_in_fresh_processes_and_summarises_them(torch_side, capsys):
    """--runs N: N child processes of the plain run, their figures kept whole, and the median
    and range of their seconds per iteration (and, with --compare-torch, of their ratios)."""
    if torch_side:
        pytest.importorskip("torch")
    argv = "--workload small32 --batch 2 --iterations 1 --no-memory --runs 3".split()
    res = bench.main(argv + (["--compare-torch"] if torch_side else []))
    children = res["runs"]
    assert len(children) == 3
    assert all(c["workload"] == "small32" and c["batch"] == 2 for c in children)
    assert all("peak_mib" not in c for c in children)  # --no-memory reached the children
    secs = sorted(c["sec_per_iter"] for c in children)
    assert res["sec_per_iter_median"] == secs[1]
    assert res["sec_per_iter_range"] == [secs[0], secs[2]]
    out = capsys.readouterr().out
    assert "run 1/3" in out and "run 3/3" in out and "small32, 3 runs" in out
    if torch_side:
        ratios = sorted(c["ratio_abp_over_torch"] for c in children)
        for c in children:  # each run's own ratio of its medians
            assert c["ratio_abp_over_torch"] == pytest.approx(
                c["sec_per_iter"] / c["torch_sec_per_iter"]
            )
        assert res["ratio_abp_over_torch_median"] == ratios[1]
        assert "ratio abp_np / torch" in out
    else:
        assert "ratio_abp_over_torch_median" not in res and "ratio" not in out


@pytest.mark.parametrize("extra", [["--breakdown"], ["--ab", "threads=1"], ["--runs", "-1"]])
def test_runs_is_for_the_plain_run(extra):
    with pytest.raises(SystemExit, match="--runs N"):
        bench.main("--workload small32 --iterations 1 --runs 2".split() + extra)


def test_processes_needs_ab():
    with pytest.raises(SystemExit, match="goes with --ab"):
        bench.main("--workload small32 --iterations 1 --processes 2".split())


@pytest.mark.parametrize(
    "text, message",
    [
        ("threads", "KEY=VALUE"),
        ("speed=2", "one of"),
        ("c=maybe", "bad value for c"),
        ("threads=two", "bad value for threads"),
    ],
)
def test_ab_says_what_is_wrong_with_its_settings(text, message):
    with pytest.raises(SystemExit, match=message):
        bench.ab_settings(text)


def test_winograd_steps_is_for_the_cpu_path():
    with pytest.raises(SystemExit, match="--device cpu"):
        bench.winograd_steps(
            bench._parser().parse_args(["--winograd-steps", "--device", "gpu", "--iterations", "1"])
        )


def test_cuda_graph_is_for_the_gpu():
    with pytest.raises(SystemExit, match="--device gpu"):
        bench.main(["--workload", "small32", "--iterations", "1", "--cuda-graph"])


def test_torch_side_runs_without_tf32():
    """cuDNN's TF32 is on by default in PyTorch; the comparison turns it off on both paths."""
    torch = pytest.importorskip("torch")
    cudnn, matmul = torch.backends.cudnn, torch.backends.cuda.matmul
    # set and restored by hand: these are properties of torch's modules, which pytest's
    # monkeypatch cannot always put back
    before = (cudnn.allow_tf32, matmul.allow_tf32)
    cudnn.allow_tf32 = matmul.allow_tf32 = True
    try:
        args = ["--workload", "small32", "--iterations", "1", "--batch", "4", "--compare-torch"]
        bench.main([*args, "--no-memory"])
        assert cudnn.allow_tf32 is False
        assert matmul.allow_tf32 is False
    finally:
        cudnn.allow_tf32, matmul.allow_tf32 = before


@pytest.mark.gpu
@pytest.mark.parametrize("graph", [False, True])
def test_gpu_benchmark_reports_the_device_and_tf32(graph):
    args = ["--workload", "small32", "--device", "gpu", "--iterations", "1", "--batch", "4"]
    res = bench.main([*args, "--json"] + (["--cuda-graph"] if graph else []))
    assert res["sec_per_iter"] > 0 and res["peak_mib"] > 0
    assert res["gpu"] and res["cupy"] and res["cupy_tf32"] in (False, True)
    assert ("CUDA graph" in res["abp_source"]) == graph
