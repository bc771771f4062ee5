"""Reusable conformance suites: every joint-group and object-tracker backend must pass them.

Use (one test module per backend)::

    from handover.drivers.conformance import JointGroupConformance, JointGroupHarness

    @pytest.fixture
    def joint_group_harness() -> JointGroupHarness:   # function scope; may also yield
        clock = ...                                    # the device's time source
        return JointGroupHarness(device=MyArm(...), now=clock.now, advance=clock.advance,
                                 settle_s=0.5, tolerance=0.01, make_failing=...)

    class TestMyArm(JointGroupConformance):
        pass

The fixture must give a fresh, UNCONFIGURED device; the suites close it after each test. Test
values are derived from the device's own limits (mid-range targets, targets beyond the limits),
so the suites know nothing about any particular backend. Units: rad, s, m.

The suites move the device: on hardware, run them only with a clear workspace.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable, Iterator, Optional, Protocol

import numpy as np
import pytest

from handover.drivers.device import Device, DeviceError, DeviceFault, DeviceStopped, Lifecycle
from handover.drivers.joint_group import JointGroup, JointGroupInfo, JointState
from handover.drivers.object_tracker import ObjectObservation, ObjectTracker


@dataclass
class JointGroupHarness:
    """How the joint-group suite drives one backend.

    - ``device``: a fresh, UNCONFIGURED joint group.
    - ``now()``: the device's current time (s), the value passed to ``read``/``command``.
    - ``advance(dt)``: let ``dt`` seconds pass (step a simulation or sleep); returns the new now.
    - ``settle_s``: time (s) within which a reachable target is reached and a held position settles.
    - ``tolerance``: allowed position error (rad).
    - ``make_failing()``: makes the next read or write of the device fail (once), to test FAULT;
      ``None`` skips the fault tests.
    """

    device: JointGroup
    now: Callable[[], float]
    advance: Callable[[float], float]
    settle_s: float
    tolerance: float
    make_failing: Optional[Callable[[], None]] = None


@dataclass
class ObjectTrackerHarness:
    """How the object-tracker suite drives one backend.

    - ``device``: a fresh, UNCONFIGURED object tracker; its scene must show the object.
    - ``now()`` / ``advance(dt)``: as in :class:`JointGroupHarness` (s).
    - ``period_s``: time between two reads of the suite (s), e.g. the camera frame period.
    - ``observe_s``: time (s) within which at least one valid observation must arrive.
    - ``make_failing()``: makes the next read fail (once); ``None`` skips the fault tests.
    """

    device: ObjectTracker
    now: Callable[[], float]
    advance: Callable[[float], float]
    period_s: float
    observe_s: float
    make_failing: Optional[Callable[[], None]] = None


class _Harness(Protocol):
    """What the lifecycle tests need from either harness."""

    device: Device
    now: Callable[[], float]
    advance: Callable[[float], float]
    make_failing: Optional[Callable[[], None]]


# -------------------------------------------------------------------------------------------------
# Shared lifecycle tests


_STATES = [s.value for s in Lifecycle]


class _DeviceConformance:
    """Lifecycle tests common to all devices. Each suite defines the ``harness`` fixture (a
    :class:`_Harness`) from its own public fixture and closes the device afterwards."""

    # -- helpers ----------------------------------------------------------------------------------

    @staticmethod
    def _read(h: _Harness):
        return h.device.read(h.now())  # type: ignore[attr-defined]

    def _stimulate(self, h: _Harness, k: int) -> None:
        """Something to do at step ``k`` of a run besides reading (joint groups: command)."""

    @staticmethod
    def _require_failing(h: _Harness) -> Callable[[], None]:
        if h.make_failing is None:
            pytest.skip("the harness cannot make the device fail (make_failing is None)")
        return h.make_failing

    def _bring_to(self, h: _Harness, state: Lifecycle) -> None:
        """Drive the fresh device into ``state`` through the public API only."""
        dev = h.device
        if state is Lifecycle.UNCONFIGURED:
            return
        dev.configure()
        if state is Lifecycle.ACTIVE:
            dev.activate()
        elif state is Lifecycle.STOPPED:
            dev.stop(h.now())  # type: ignore[attr-defined]
        elif state is Lifecycle.FAULT:
            self._require_failing(h)()
            with pytest.raises(DeviceFault):
                self._read(h)
        assert dev.state is state

    def _assert_commandable_after_reconnect(self, h: _Harness) -> None:
        """``configure()`` + ``activate()`` works and reads work; joint groups also check commands."""
        h.device.configure()
        h.device.activate()
        assert h.device.state is Lifecycle.ACTIVE
        self._read(h)

    # -- tests ------------------------------------------------------------------------------------

    def test_starts_unconfigured(self, harness: _Harness) -> None:
        assert harness.device.state is Lifecycle.UNCONFIGURED
        assert harness.device.fault_reason is None
        assert isinstance(harness.device.name, str) and harness.device.name

    def test_read_before_configure_is_refused(self, harness: _Harness) -> None:
        with pytest.raises(DeviceError, match="cannot read") as err:
            self._read(harness)
        assert not isinstance(err.value, (DeviceFault, DeviceStopped))
        assert harness.device.name in str(err.value)
        assert harness.device.state is Lifecycle.UNCONFIGURED

    def test_transitions_out_of_order_are_refused(self, harness: _Harness) -> None:
        dev = harness.device
        for call in (dev.activate, dev.deactivate):
            with pytest.raises(DeviceError):
                call()
        dev.configure()
        for call in (dev.configure, dev.deactivate):
            with pytest.raises(DeviceError):
                call()
        dev.activate()
        for call in (dev.configure, dev.activate):
            with pytest.raises(DeviceError):
                call()
        assert dev.state is Lifecycle.ACTIVE

    def test_configure_activate_deactivate_activate(self, harness: _Harness) -> None:
        dev = harness.device
        dev.configure()
        assert dev.state is Lifecycle.INACTIVE
        self._read(harness)
        dev.activate()
        assert dev.state is Lifecycle.ACTIVE
        self._read(harness)
        dev.deactivate()
        assert dev.state is Lifecycle.INACTIVE
        self._read(harness)
        dev.activate()
        assert dev.state is Lifecycle.ACTIVE
        self._read(harness)

    @pytest.mark.parametrize("state", _STATES)
    def test_close_from_any_state(self, harness: _Harness, state: str) -> None:
        self._bring_to(harness, Lifecycle(state))
        harness.device.close()
        assert harness.device.state is Lifecycle.UNCONFIGURED
        assert harness.device.fault_reason is None
        harness.device.close()  # closing a closed device is harmless
        self._assert_commandable_after_reconnect(harness)

    def test_context_manager_closes(self, harness: _Harness) -> None:
        with harness.device as dev:
            dev.configure()
            dev.activate()
        assert harness.device.state is Lifecycle.UNCONFIGURED

    def test_stop_latches_until_reconnect(self, harness: _Harness) -> None:
        dev = harness.device
        self._bring_to(harness, Lifecycle.ACTIVE)
        dev.stop(harness.now())  # type: ignore[attr-defined]
        assert dev.state is Lifecycle.STOPPED
        self._read(harness)  # reads still work
        for call in (dev.activate, dev.deactivate, dev.configure):
            with pytest.raises(DeviceStopped):
                call()
        assert dev.state is Lifecycle.STOPPED
        dev.close()
        self._assert_commandable_after_reconnect(harness)

    def test_stop_from_inactive(self, harness: _Harness) -> None:
        self._bring_to(harness, Lifecycle.STOPPED)
        self._read(harness)
        with pytest.raises(DeviceStopped):
            harness.device.activate()

    def test_stop_is_idempotent(self, harness: _Harness) -> None:
        self._bring_to(harness, Lifecycle.ACTIVE)
        harness.device.stop(harness.now())  # type: ignore[attr-defined]
        harness.device.stop(harness.now())  # type: ignore[attr-defined]
        harness.device.stop(harness.advance(0.01))  # type: ignore[attr-defined]
        assert harness.device.state is Lifecycle.STOPPED

    def test_stop_before_configure_is_refused(self, harness: _Harness) -> None:
        with pytest.raises(DeviceError):
            harness.device.stop(harness.now())  # type: ignore[attr-defined]
        assert harness.device.state is Lifecycle.UNCONFIGURED

    def _check_run_stamps(self, h: _Harness, dt: float, steps: int) -> list:
        """Read ``steps`` times, ``dt`` apart (with :meth:`_stimulate`); every stamp is
        ``<= now`` and none decreases. Returns the readings."""
        readings = []
        previous = -np.inf
        for k in range(steps):
            self._stimulate(h, k)
            now = h.advance(dt)
            reading = h.device.read(now)  # type: ignore[attr-defined]
            assert reading.stamp <= now, f"stamp {reading.stamp} is in the future (now {now})"
            assert reading.stamp >= previous, f"stamp went back from {previous} to {reading.stamp}"
            previous = reading.stamp
            readings.append(reading)
        return readings

    def test_failing_read_faults_until_reconnect(self, harness: _Harness) -> None:
        self._bring_to(harness, Lifecycle.ACTIVE)
        self._require_failing(harness)()
        with pytest.raises(DeviceFault):
            self._read(harness)
        self._assert_fault_latched(harness)

    def _assert_fault_latched(self, h: _Harness) -> None:
        """In FAULT, every call but ``close()`` raises DeviceFault naming the reason; ``close()`` +
        ``configure()`` recovers."""
        dev = h.device
        assert dev.state is Lifecycle.FAULT
        assert isinstance(dev.fault_reason, str) and dev.fault_reason
        calls: list[Callable[[], object]] = [
            lambda: self._read(h),
            lambda: dev.stop(h.now()),  # type: ignore[attr-defined]
            dev.activate,
            dev.deactivate,
            dev.configure,
            *self._fault_refused_calls(h),
        ]
        for call in calls:
            with pytest.raises(DeviceFault) as err:
                call()
            assert dev.fault_reason in str(err.value) and dev.name in str(err.value)
            assert dev.state is Lifecycle.FAULT
        dev.close()
        assert dev.state is Lifecycle.UNCONFIGURED and dev.fault_reason is None
        self._assert_commandable_after_reconnect(h)

    def _fault_refused_calls(self, h: _Harness) -> list[Callable[[], object]]:
        """Device-specific calls that FAULT must refuse."""
        return []


# -------------------------------------------------------------------------------------------------
# Joint groups


def _targets(info: JointGroupInfo, low: float, high: float) -> np.ndarray:
    """Per-joint targets inside the limits (rad): joint ``i`` at a fraction of its range going from
    ``low`` (first joint) to ``high`` (last), so the joints get distinct targets (order shows)."""
    lower, upper = np.asarray(info.lower), np.asarray(info.upper)
    return lower + np.linspace(low, high, info.size) * (upper - lower)


def _target_a(info: JointGroupInfo) -> np.ndarray:
    return _targets(info, 0.3, 0.7)


def _target_b(info: JointGroupInfo) -> np.ndarray:
    return _targets(info, 0.7, 0.3)


def _bad_commands(n: int) -> dict[str, np.ndarray]:
    one_nan = np.zeros(n)
    one_nan[n // 2] = np.nan
    return {
        "nan": np.full(n, np.nan),
        "one_nan": one_nan,
        "inf": np.full(n, np.inf),
        "minus_inf": np.full(n, -np.inf),
        "too_short": np.zeros(n - 1),
        "too_long": np.zeros(n + 1),
        "empty": np.zeros(0),
    }


class JointGroupConformance(_DeviceConformance):
    """Conformance tests for :class:`JointGroup` backends (fixture: ``joint_group_harness``)."""

    @pytest.fixture
    def harness(self, joint_group_harness: JointGroupHarness) -> Iterator[JointGroupHarness]:
        yield joint_group_harness
        joint_group_harness.device.close()

    # -- helpers ----------------------------------------------------------------------------------

    def _stimulate(self, h: JointGroupHarness, k: int) -> None:
        """Alternate between the two test targets so the device moves during a run."""
        if h.device.state is Lifecycle.ACTIVE and k % 4 == 0:
            info = h.device.info
            h.device.command(_target_a(info) if k % 8 == 0 else _target_b(info), h.now())

    def _fault_refused_calls(self, h: JointGroupHarness) -> list[Callable[[], object]]:
        target = _target_a(h.device.info)
        return [lambda: h.device.command(target, h.now()), lambda: h.device.hold(h.now())]

    def _assert_commandable_after_reconnect(self, h: JointGroupHarness) -> None:
        super()._assert_commandable_after_reconnect(h)
        self._move_to(h, _target_b(h.device.info))

    def _move_to(self, h: JointGroupHarness, target: np.ndarray) -> JointState:
        """Command ``target`` (inside the limits), wait ``settle_s``; asserts it was reached."""
        sent = h.device.command(target, h.now())
        np.testing.assert_array_equal(sent, target)  # inside the limits: sent unchanged
        return self._assert_at(h, target, h.settle_s)

    @staticmethod
    def _assert_at(h: JointGroupHarness, expected: np.ndarray, wait_s: float) -> JointState:
        """After ``wait_s`` the measured position is within ``tolerance`` of ``expected`` (rad)."""
        state = h.device.read(h.advance(wait_s))
        np.testing.assert_allclose(state.position, expected, rtol=0, atol=h.tolerance,
                                   err_msg=f"{h.device.name}: position (rad) in {h.device.info.names} order")
        return state

    def _assert_honest(self, h: JointGroupHarness, state: JointState) -> None:
        info = h.device.info
        assert isinstance(state, JointState)
        assert np.isfinite(state.stamp), "a measurement has a finite time"
        assert state.position.shape == (info.size,) and np.isfinite(state.position).all()
        for label, value, provided in (("velocity", state.velocity, info.provides_velocity),
                                       ("effort", state.effort, info.provides_effort)):
            if not provided:
                assert value is None, f"{label} is not provided, yet read returned {value}"
            else:
                assert value is not None, f"info says {label} is provided, read returned None"
                assert value.shape == (info.size,) and np.isfinite(value).all(), f"{label}: {value}"

    # -- tests ------------------------------------------------------------------------------------

    def test_info_names_and_limits(self, harness: JointGroupHarness) -> None:
        info = harness.device.info
        assert info.size > 0 and len(set(info.names)) == info.size
        assert all(isinstance(n, str) and n for n in info.names)
        assert len(info.lower) == len(info.upper) == info.size
        lower, upper = np.asarray(info.lower), np.asarray(info.upper)
        assert np.isfinite(lower).all() and np.isfinite(upper).all()
        assert (lower <= upper).all(), f"lower > upper at {np.flatnonzero(lower > upper)}"
        assert isinstance(info.provides_velocity, bool) and isinstance(info.provides_effort, bool)

    def test_read_shapes_and_optional_data(self, harness: JointGroupHarness) -> None:
        """Position has ``size`` finite entries; velocity/effort are None exactly when not provided,
        in every readable state and while moving."""
        dev = harness.device
        dev.configure()
        self._assert_honest(harness, self._read(harness))
        dev.activate()
        for state in self._check_run_stamps(harness, harness.settle_s / 4, 8):
            self._assert_honest(harness, state)
        dev.stop(harness.now())
        self._assert_honest(harness, self._read(harness))

    def test_stamps_monotonic_and_not_in_future(self, harness: JointGroupHarness) -> None:
        harness.device.configure()
        self._check_run_stamps(harness, harness.settle_s / 10, 5)  # inactive
        harness.device.activate()
        self._check_run_stamps(harness, harness.settle_s / 10, 30)  # moving between two targets

    def test_command_while_inactive_is_refused(self, harness: JointGroupHarness) -> None:
        dev = harness.device
        target = _target_a(dev.info)
        with pytest.raises(DeviceError):
            dev.command(target, harness.now())  # unconfigured
        dev.configure()
        for call in (lambda: dev.command(target, harness.now()), lambda: dev.hold(harness.now())):
            with pytest.raises(DeviceError) as err:
                call()
            assert not isinstance(err.value, (DeviceFault, DeviceStopped))
        dev.activate()
        dev.deactivate()
        with pytest.raises(DeviceError):
            dev.command(target, harness.now())
        assert dev.state is Lifecycle.INACTIVE

    def test_reachable_targets_are_reached_in_joint_order(self, harness: JointGroupHarness) -> None:
        """Distinct per-joint targets (rad) are reached within ``settle_s``: the measured numbers
        equal the commanded ones joint by joint, in ``info.names`` order."""
        self._bring_to(harness, Lifecycle.ACTIVE)
        self._move_to(harness, _target_a(harness.device.info))
        self._move_to(harness, _target_b(harness.device.info))

    def test_hold_keeps_position(self, harness: JointGroupHarness) -> None:
        self._bring_to(harness, Lifecycle.ACTIVE)
        at = self._move_to(harness, _target_a(harness.device.info))
        held = harness.device.hold(harness.now())
        assert held.shape == (harness.device.info.size,)
        np.testing.assert_allclose(held, at.position, rtol=0, atol=harness.tolerance)
        self._assert_at(harness, held, harness.settle_s)
        self._assert_at(harness, held, harness.settle_s)

    def test_hold_while_moving_settles_at_hold_target(self, harness: JointGroupHarness) -> None:
        dev = harness.device
        self._bring_to(harness, Lifecycle.ACTIVE)
        self._move_to(harness, _target_a(dev.info))
        dev.command(_target_b(dev.info), harness.now())
        harness.advance(harness.settle_s / 10)
        measured = dev.read(harness.now()).position
        held = dev.hold(harness.now())
        # hold targets the measured position as it is (a hold never moves a joint, not even into the limits)
        np.testing.assert_allclose(held, measured, rtol=0, atol=harness.tolerance)
        self._assert_at(harness, held, harness.settle_s)

    def test_out_of_limit_targets_are_clamped(self, harness: JointGroupHarness) -> None:
        dev = harness.device
        info = dev.info
        lower, upper = np.asarray(info.lower), np.asarray(info.upper)
        beyond = np.maximum(1.0, upper - lower)  # rad past the limit
        below_or_above = np.where(np.arange(info.size) % 2 == 0, lower - beyond, upper + beyond)
        self._bring_to(harness, Lifecycle.ACTIVE)
        for raw in (below_or_above, lower - beyond, upper + beyond):
            sent = dev.command(raw, harness.now())
            np.testing.assert_array_equal(sent, np.clip(raw, lower, upper))
            state = self._assert_at(harness, sent, harness.settle_s)
            assert (state.position >= lower - harness.tolerance).all()
            assert (state.position <= upper + harness.tolerance).all()

    @pytest.mark.parametrize("bad", list(_bad_commands(3)))
    def test_invalid_command_is_refused_and_changes_nothing(self, harness: JointGroupHarness, bad: str) -> None:
        dev = harness.device
        self._bring_to(harness, Lifecycle.ACTIVE)
        at = _target_a(dev.info)
        self._move_to(harness, at)
        with pytest.raises(ValueError, match=re.escape(dev.name)):
            dev.command(_bad_commands(dev.info.size)[bad], harness.now())
        assert dev.state is Lifecycle.ACTIVE and dev.fault_reason is None
        self._assert_at(harness, at, harness.settle_s)

    def test_stop_holds_and_refuses_commands(self, harness: JointGroupHarness) -> None:
        dev = harness.device
        self._bring_to(harness, Lifecycle.ACTIVE)
        at = _target_a(dev.info)
        self._move_to(harness, at)
        dev.stop(harness.now())
        target = _target_b(dev.info)
        for call in (lambda: dev.command(target, harness.now()), lambda: dev.hold(harness.now())):
            with pytest.raises(DeviceStopped):
                call()
        self._assert_at(harness, at, harness.settle_s)
        self._assert_at(harness, at, harness.settle_s)
        dev.stop(harness.now())  # idempotent, still held
        dev.close()
        self._assert_commandable_after_reconnect(harness)  # ... and moves to target B

    def test_failing_write_faults_until_reconnect(self, harness: JointGroupHarness) -> None:
        self._bring_to(harness, Lifecycle.ACTIVE)
        self._require_failing(harness)()
        with pytest.raises(DeviceFault):
            harness.device.command(_target_a(harness.device.info), harness.now())
        self._assert_fault_latched(harness)


# -------------------------------------------------------------------------------------------------
# Object trackers


class ObjectTrackerConformance(_DeviceConformance):
    """Conformance tests for :class:`ObjectTracker` backends (fixture: ``object_tracker_harness``)."""

    @pytest.fixture
    def harness(self, object_tracker_harness: ObjectTrackerHarness) -> Iterator[ObjectTrackerHarness]:
        yield object_tracker_harness
        object_tracker_harness.device.close()

    def _observe(self, h: ObjectTrackerHarness) -> list[ObjectObservation]:
        steps = max(1, int(np.ceil(h.observe_s / h.period_s)))
        return self._check_run_stamps(h, h.period_s, steps)

    def test_stamps_monotonic_and_not_in_future(self, harness: ObjectTrackerHarness) -> None:
        """Capture stamps (older than their arrival is fine) never decrease and are ``<= now``."""
        harness.device.configure()
        self._observe(harness)
        harness.device.activate()
        self._observe(harness)

    def test_observations_are_honest(self, harness: ObjectTrackerHarness) -> None:
        """Valid: a finite (3,) position (m); invalid: position None. At least one valid one
        arrives within ``observe_s``."""
        harness.device.configure()
        harness.device.activate()
        observations = self._observe(harness)
        for obs in observations:
            assert isinstance(obs, ObjectObservation) and isinstance(obs.valid, (bool, np.bool_))
            if obs.valid:
                assert obs.position is not None and obs.position.shape == (3,)
                assert np.isfinite(obs.position).all() and np.isfinite(obs.stamp)
            else:
                assert obs.position is None, f"invalid observation with a position: {obs}"
        assert any(o.valid for o in observations), f"no valid observation within {harness.observe_s} s"
