"""The scripted expert: its catch point is the configured goal, and it really throws and catches."""

import mujoco
import numpy as np
import pytest

from handover.runtime.cell_config import load_cell_config
from handover.runtime.contract import ContractSpec
from handover.sim_twin.demonstrations import ActionController
from handover.sim_twin.devices import TwinDevices
from handover.sim_twin.episode import run_episode
from handover.sim_twin.expert import CATCHER_ARM, ExpertPolicy
from handover.sim_twin.success import judge
from handover.sim_twin.twin import EpisodeParams, Twin


@pytest.fixture(scope="module")
def cfg():
    return load_cell_config()


@pytest.fixture(scope="module")
def devices(cfg):
    devices = TwinDevices.create(Twin(cfg, seed=3))
    devices.bring_up()
    return devices


def test_catch_pose_puts_the_palm_centre_on_the_goal(cfg):
    expert = ExpertPolicy(cfg)
    twin = Twin(cfg)
    q = ContractSpec.from_config(cfg).default.astype(float)
    q[CATCHER_ARM] = expert.catch_arm
    twin.data.qpos[twin.qpos_adr] = q
    mujoco.mj_kinematics(twin.model, twin.data)
    palm = twin.data.site_xpos[twin.model.site("catcher/palm_center").id]
    assert np.linalg.norm(palm - np.array(cfg.goal)) < 0.005


@pytest.mark.parametrize("mass_factor", [0.5, 1.0, 1.5])
def test_expert_throws_and_the_catcher_holds_the_object(cfg, devices, mass_factor):
    twin = devices.twin
    expert = ExpertPolicy(cfg)
    controller = ActionController(ContractSpec.from_config(cfg), expert, cfg.goal, cfg.object.start_position, twin=twin)
    params = EpisodeParams(mass_factor=mass_factor, friction_factor=0.8, scale_factor=1.03)
    twin.reset(params)
    controller.begin_episode(params)
    records = run_episode(devices, controller, cfg.episode_steps)
    heights = np.array([r.object_position[2] for r in records])
    ys = np.array([r.object_position[1] for r in records])
    assert ys[-1] < cfg.object.start_position[1] - 0.2  # it travelled towards the catcher
    assert heights.min() > 0.15  # never fell
    outcome = judge(twin)
    assert outcome.success, outcome.reason


def test_expert_actions_are_in_range_and_the_catcher_closes(cfg, devices):
    twin = devices.twin
    expert = ExpertPolicy(cfg)
    controller = ActionController(ContractSpec.from_config(cfg), expert, cfg.goal, cfg.object.start_position, twin=twin)
    twin.reset()
    closed_at = []
    run_episode(devices, controller, cfg.episode_steps, on_step=lambda rec: closed_at.append(expert.closed))
    log = controller.episode_log()
    assert np.all(np.abs(log.expert_actions) <= 1.0)
    # the thrower's fingers are flat from step 2 on: the object is free to leave the palm
    assert np.allclose(log.targets[5, 6:22], expert.flat_hand, atol=1e-5)
    assert not closed_at[5] and closed_at[-1]  # open while the object flies, closed at the end
