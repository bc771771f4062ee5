"""``handover graph-benchmark``: a short run of both layouts at 60 Hz (a config override) gives every
figure, sane; the targets themselves are the benchmark's to report, not asserted here."""

import io
import math

import pytest

from handover.runtime.cell_config import DEFAULT_CONFIG_PATH, load_cell_config
from handover.runtime.errors import InputError


def test_stop_latency_is_the_last_driver_after_each_publish():
    from handover.runtime.graph_benchmark import stop_latencies

    events = {"a": [1.002, 2.001, 5.0], "b": [1.004, 2.003]}
    lat = stop_latencies([1.0, 2.0, 3.0], events)
    assert lat[0] == pytest.approx(0.004) and lat[1] == pytest.approx(0.003)
    assert lat[2] == math.inf  # driver b never held after the third stop


def test_benchmark_config_is_checked():
    from handover.runtime.graph_benchmark import BenchmarkConfig

    for bad in ({"rates": ()}, {"rates": (0.0,)}, {"modes": ("threads",)}, {"stops": -1}, {"speed": 0.0},
                {"clock_every": 0}):
        with pytest.raises(InputError):
            BenchmarkConfig(**bad)


def test_a_rate_override_is_a_valid_config_copy(tmp_path):
    from handover.runtime.graph_benchmark import _config_at_rate

    assert _config_at_rate(DEFAULT_CONFIG_PATH, load_cell_config().control_rate_hz, tmp_path) == DEFAULT_CONFIG_PATH
    cfg = load_cell_config(_config_at_rate(DEFAULT_CONFIG_PATH, 60.0, tmp_path))
    assert cfg.control_rate_hz == 60.0 and cfg.models.bundle == load_cell_config().models.bundle


def test_thread_cpu_names_this_thread():
    from handover.runtime.graph_benchmark import thread_cpu_s

    cpu = thread_cpu_s()
    assert "MainThread" in cpu and cpu["process"] >= cpu["MainThread"] >= 0


def test_a_short_run_reports_every_figure(ros_context):
    from handover.runtime.graph_benchmark import MODE_SETS, BenchmarkConfig, run_benchmark

    out = io.StringIO()
    results = run_benchmark(BenchmarkConfig(rates=(60.0,), episodes=1, stops=2), out)
    text = out.getvalue()
    assert [r["mode"] for r in results] == ["processes", "one-process"]
    for r in results:
        assert r["rate_hz"] == 60.0
        assert set(r["cpu_percent"]) == set(MODE_SETS[r["mode"]])
        for shares in r["cpu_percent"].values():
            assert 0 <= shares["process"] <= 100 * 2 + 1  # two cores at most
        cell = r["cpu_percent"]["cell" if r["mode"] == "processes" else "all"]
        assert cell.get("twin-physics", 0) > 0 and cell.get("executor", 0) > 0
        assert r["jitter_ms"]["n"] > 60 and r["baseline_jitter_ms"]["n"] > 60  # seconds of 60 Hz ticks
        assert 0 <= r["jitter_ms"]["p50"] <= r["jitter_ms"]["p99"] <= r["jitter_ms"]["max"]
        assert r["jitter_p99_ratio"] > 0
        assert r["state_to_command_ms"]["n"] >= 30  # at least the episode's policy steps
        assert 0 < r["state_to_command_ms"]["p50"] < 1000
        assert r["stop_ms"]["n"] == 2 and r["stops_missed"] == 0
        assert 0 < r["stop_ms"]["max"] < 1000
        assert r["episodes_judged"] == 1
        assert r["twin"]["physics_steps"] > 120  # more than a second of 120 Hz physics
    for line in ("policy loop period jitter", "bare paced loop", "p99 ratio policy/bare", "joint state -> command",
                 "stop latency", "GIL at 60 Hz", "load average"):
        assert line in text, line
