"""The device registry (handover.drivers.registry) and the config's devices: section: validation errors
name the file, the key and the value; a real backend without its hardware fails with one line naming
the device and its address (exit 2), and every device already configured is closed again; a backend
thread's fault puts its device in FAULT at once; devices are closed on shutdown; Allegro gains and
camera extrinsics come from files named per device serial."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
import yaml

from handover.drivers.device import DeviceFault, Lifecycle
from handover.drivers.registry import (
    DeviceStartError,
    build_devices,
    configure_all,
    describe,
    validate_devices,
)
from handover.runtime.cell_config import DEFAULT_CONFIG_PATH, ConfigError, load_cell_config

RAW = yaml.safe_load(DEFAULT_CONFIG_PATH.read_text())
MIRRORS = {"calibration_dir": "calibration",
           "thrower": {"arm": {"backend": "mirror"}, "hand": {"backend": "mirror"}},
           "catcher": {"arm": {"backend": "mirror"}, "hand": {"backend": "mirror"}},
           "tracker": {"backend": "mirror"}}


def write_config(tmp_path: Path, devices: dict) -> Path:
    raw = dict(RAW, devices=devices)
    raw["models"] = {"bundle": str(DEFAULT_CONFIG_PATH.parent / "reference_bundle")}
    path = tmp_path / "cell.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def with_entry(key: str, entry: dict) -> dict:
    devices = yaml.safe_load(yaml.safe_dump(MIRRORS))
    if key == "tracker":
        devices["tracker"] = entry
    else:
        side, group = key.split(".")
        devices[side][group] = entry
    return devices


# -- validation: file, key, value ------------------------------------------------------------------


@pytest.mark.parametrize("key, entry, expected", [
    ("thrower.arm", {"backend": "ur5"}, "devices.thrower.arm.backend: expected one of ['twin', 'mirror', 'xarm'] (got 'ur5')"),
    ("thrower.hand", {"backend": "xarm"}, "devices.thrower.hand.backend: expected one of ['twin', 'mirror', 'allegro'] (got 'xarm')"),
    ("catcher.arm", {"backend": "xarm", "allegro": {}}, "devices.catcher.arm.allegro: parameters for backend allegro, but "
                                                         "devices.catcher.arm.backend is xarm"),
    ("catcher.arm", {"xarm": {}}, "devices.catcher.arm.backend: missing key"),
    ("tracker", {"backend": "realsense", "realsense": [1]}, "devices.tracker.realsense: expected a mapping"),
])
def test_the_devices_section_is_checked_when_the_config_is_loaded(tmp_path, key, entry, expected):
    path = write_config(tmp_path, with_entry(key, entry))
    with pytest.raises(ConfigError) as err:
        load_cell_config(path)
    assert str(err.value).startswith(f"{path}: ") and expected in str(err.value)


@pytest.mark.parametrize("key, entry, expected", [
    ("thrower.arm", {"backend": "xarm", "xarm": {"address": "127.0.0.2", "stream_rate_hz": 300}},
     "devices.thrower.arm.xarm.stream_rate_hz: must be 100-250 Hz"),
    ("thrower.arm", {"backend": "xarm", "xarm": {"address": "robot.local"}},
     "devices.thrower.arm.xarm.address: expected the controller's IPv4 address"),
    ("catcher.hand", {"backend": "allegro", "allegro": {"interface": "kvaser", "channel": "0", "hand_side": "right"}},
     "devices.catcher.hand.allegro.interface: expected one of ['socketcan', 'pcan', 'virtual', 'udp_multicast'] (got 'kvaser')"),
    ("tracker", {"backend": "realsense", "realsense": {"serial": "1234", "color_fps": 90}},
     "devices.tracker.realsense: color_fps: the D435 streams colour at one of (6, 15, 30, 60) fps (60 at most) (got 90)"),
    ("thrower.hand", {"backend": "mirror", "mirror": {"lag_s": -1}}, "devices.thrower.hand.mirror.lag_s: expected a finite number >= 0 s (got -1)"),
    ("thrower.arm", {"backend": "twin", "twin": {"x": 1}}, "devices.thrower.arm.twin: the twin backend takes no parameters"),
])
def test_each_backend_checks_its_parameters_with_its_own_config_class(tmp_path, key, entry, expected):
    path = write_config(tmp_path, with_entry(key, entry))
    cfg = load_cell_config(path)  # the runtime's part passes: parameters are the drivers' business
    with pytest.raises(ConfigError) as err:
        validate_devices(cfg)
    assert str(err.value).startswith(f"{path}: ") and expected in str(err.value)


def test_two_devices_on_one_address_or_channel_are_refused(tmp_path):
    devices = with_entry("thrower.arm", {"backend": "xarm", "xarm": {"address": "10.0.0.5"}})
    devices["catcher"]["arm"] = {"backend": "xarm", "xarm": {"address": "10.0.0.5"}}
    with pytest.raises(ConfigError, match=r"devices.catcher.arm.xarm: address 10.0.0.5 is also devices.thrower.arm's"):
        validate_devices(load_cell_config(write_config(tmp_path, devices)))


def test_the_default_config_names_the_real_cell_and_handover_config_checks_it(tmp_path, capsys):
    from handover.cli import main

    specs = validate_devices(load_cell_config())
    assert {s.backend for s in specs.entries.values()} == {"xarm", "allegro", "realsense"}
    assert specs.entries[("", "tracker")].config.extrinsics_path.name == "d435_123456789012.yaml"
    assert specs.entries[("", "tracker")].config.calibration_dir == DEFAULT_CONFIG_PATH.parent / "calibration"
    assert main(["config"]) == 0
    out = capsys.readouterr().out
    assert "devices.thrower.arm: xarm (xArm controller at 192.168.1.185:502)" in out
    assert "devices.catcher.hand: allegro (Allegro hand on socketcan:can1 device id 0)" in out
    bad = write_config(tmp_path, with_entry("thrower.arm", {"backend": "xarm", "xarm": {"address": "1.2.3.4",
                                                                                        "report_type": "fast"}}))
    assert main(["config", str(bad)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""  # nothing says ok before the error
    assert captured.err.strip() == (f"handover config: error: {bad}: devices.thrower.arm.xarm.report_type: expected one "
                                    "of ['rich', 'normal', 'real'] (got 'fast')")


# -- bring-up without hardware: one clear line, everything closed -----------------------------------


def test_a_device_that_does_not_come_up_is_named_with_its_address_and_every_device_is_closed(tmp_path):
    pytest.importorskip("can", reason="python-can is not installed")
    devices = with_entry("thrower.hand", {"backend": "allegro", "allegro": {"interface": "virtual", "channel": "nobody",
                                                                            "hand_side": "left", "reply_timeout_s": 0.1}})
    cfg = load_cell_config(write_config(tmp_path, devices))
    specs = validate_devices(cfg)
    cell = build_devices(cfg, specs)
    with pytest.raises(DeviceStartError) as err:
        configure_all(cell)
    message = str(err.value)
    assert message.startswith("allegro/thrower/hand (devices.thrower.hand: Allegro hand on virtual:nobody device id 0) "
                              "did not come up: ")
    assert "no reply to the hand-info request" in message and "is the hand powered and the bus wired?" in message
    assert all(d.state is Lifecycle.UNCONFIGURED for d in cell.all())  # the mirrors configured before: closed again


def test_backend_real_without_the_hardware_exits_2_naming_the_device_and_its_address(tmp_path):
    import subprocess
    import sys

    pytest.importorskip("xarm", reason="xarm-python-sdk is not installed")
    pytest.importorskip("rclpy", reason="rclpy is not installed")
    from handover.drivers.xarm.testing import loopback_address

    address = loopback_address()  # nothing listens there: connection refused at once
    path = write_config(tmp_path, with_entry("catcher.arm", {"backend": "xarm", "xarm": {"address": address,
                                                                                         "connect_timeout_s": 2}}))
    r = subprocess.run([sys.executable, "-m", "handover", "bringup", "--backend", "real", "--config", str(path)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2, r.stderr
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith(f"handover bringup: error: backend real: xarm/catcher/arm (devices.catcher.arm: xArm controller "
                           f"at {address}:502) did not come up: ")
    assert f"cannot connect to the xArm controller at {address}:502" in last
    assert "Traceback" not in r.stderr


def test_twin_entries_need_the_twin(tmp_path):
    cfg = load_cell_config(write_config(tmp_path, with_entry("thrower.arm", {"backend": "twin"})))
    with pytest.raises(ConfigError, match=r"devices.thrower.arm.backend: twin needs the twin node in this process"):
        build_devices(cfg, validate_devices(cfg))


def test_devices_are_closed_when_the_graph_shuts_down(tmp_path, ros_context):
    from handover.runtime.node_graph import build_graph

    cfg = load_cell_config(write_config(tmp_path, MIRRORS))
    graph = build_graph(cfg, ros_context, "real", "drivers")
    devices = graph.devices.all()
    assert [d.name for d in devices] == ["mirror/thrower/arm", "mirror/thrower/hand", "mirror/catcher/arm",
                                         "mirror/catcher/hand", "mirror/object_tracker"]
    graph.start()
    assert all(d.state is Lifecycle.ACTIVE for d in devices)
    graph.shutdown()
    assert all(d.state is Lifecycle.UNCONFIGURED for d in devices)


# -- faults from a backend thread ---------------------------------------------------------------------


def test_a_backend_thread_puts_its_device_in_fault_at_once_and_the_first_reason_stays():
    import numpy as np

    from handover.drivers.joint_group import JointGroupInfo
    from handover.drivers.mirror import MirrorJointGroup

    cfg = load_cell_config()
    info = JointGroupInfo.from_config(cfg.thrower.arm, True, False, gate=cfg.gate, control_period_s=cfg.control_period_s)
    dev = MirrorJointGroup(info, "mirror/thrower/arm", np.array(cfg.thrower.arm.default))
    dev.configure()
    dev.activate()
    t = threading.Thread(target=dev.report_fault, args=("controller error 31: Collision Caused Abnormal Current",))
    t.start()
    t.join()
    assert dev.state is Lifecycle.FAULT  # without any read or command
    assert not dev.report_fault("a later one")
    assert dev.fault_reason == "controller error 31: Collision Caused Abnormal Current"
    with pytest.raises(DeviceFault, match="mirror/thrower/arm: cannot read: in FAULT \\(controller error 31"):
        dev.read(0.0)
    dev.close()
    assert dev.state is Lifecycle.UNCONFIGURED and dev.fault_reason is None
    dev.report_fault("ignored while closed")
    assert dev.state is Lifecycle.UNCONFIGURED

    class Slow(MirrorJointGroup):  # a fault reported while configure's hook runs ends configure in FAULT
        def _on_configure(self):
            threading.Thread(target=self.report_fault, args=("bus silent",)).start()
            threading.Event().wait(0.05)

    slow = Slow(info, "slow", np.array(cfg.thrower.arm.default))
    with pytest.raises(DeviceFault, match="slow: cannot configure: bus silent"):
        slow.configure()
    assert slow.state is Lifecycle.FAULT and slow.fault_reason == "bus silent"


# -- calibration files per serial ---------------------------------------------------------------------


def test_allegro_gains_come_from_the_file_named_after_the_serial_the_hand_reports(tmp_path):
    pytest.importorskip("can", reason="python-can is not installed")
    from handover.drivers.allegro.emulator import AllegroEmulator, EmulatedHand, IdealJoints

    (tmp_path / "calibration").mkdir()
    (tmp_path / "calibration" / "allegro_EMU0001L.yaml").write_text(yaml.safe_dump(
        {"serial": "EMU0001L", "kp": {"joint_12.0": 1234.0}}))
    devices = with_entry("thrower.hand", {"backend": "allegro", "allegro": {"interface": "virtual", "channel": "gains",
                                                                            "hand_side": "left"}})
    cfg = load_cell_config(write_config(tmp_path, devices))
    cell = build_devices(cfg, validate_devices(cfg))
    hand = cell.joint_groups[("thrower", "hand")]
    emu = AllegroEmulator(IdealJoints([0.5] * 16), list(range(16)), {"interface": "virtual", "channel": "gains"},
                          hand=EmulatedHand(hand_side="left", serial="EMU0001L"))
    with emu:
        emu.start_streaming()
        try:
            configure_all(cell)
            assert hand.serial == "EMU0001L"
            assert hand.active_config.kp[12] == 1234.0 and hand.active_config.kp[0] == hand.config.kp[0]
        finally:
            cell.close()
    (tmp_path / "calibration" / "allegro_EMU0001L.yaml").write_text(yaml.safe_dump({"serial": "OTHER", "kp": [1] * 16}))
    with emu:
        emu.start_streaming()
        with pytest.raises(DeviceStartError, match=r"allegro_EMU0001L.yaml: serial: expected 'EMU0001L'"):
            configure_all(cell)


def test_describe_lists_every_device():
    lines = describe(validate_devices(load_cell_config()))
    assert lines[-1].startswith("devices.calibration_dir: ") and len(lines) == 6
