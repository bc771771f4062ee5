"""Shared fixtures: policy bundles exported from randomly initialised networks with the original
Dynamic Handover module trees (the real export path, not hand-made ONNX files)."""

import os
import sys
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")  # before anything imports mujoco (see handover.sim_twin)

try:  # IsaacGym refuses to load once torch is imported: load it first where it is installed
    import isaacgym  # noqa: F401
except ImportError:
    pass

import pytest

from handover.runtime.cell_config import load_cell_config
from handover.runtime.contract import ContractSpec


@pytest.fixture(scope="session")
def spec() -> ContractSpec:
    return ContractSpec.from_config(load_cell_config())


@pytest.fixture(scope="session")
def original_actor_keys() -> dict[str, tuple[int, ...]]:
    """The original MAPPO actor's state-dict names and shapes, written out (feed-forward, layer_N = 2,
    obs 450, hidden 512, act 22)."""
    return {
        "base.feature_norm.weight": (450,),
        "base.feature_norm.bias": (450,),
        "base.mlp.fc1.0.weight": (512, 450),
        "base.mlp.fc1.0.bias": (512,),
        "base.mlp.fc1.2.weight": (512,),
        "base.mlp.fc1.2.bias": (512,),
        **{f"base.mlp.fc2.{i}.0.weight": (512, 512) for i in range(2)},
        **{f"base.mlp.fc2.{i}.{j}.{p}": (512,) for i in range(2) for j, p in [(0, "bias"), (2, "weight"), (2, "bias")]},
        "act.action_out.fc_mean.weight": (22, 512),
        "act.action_out.fc_mean.bias": (22,),
        "act.action_out.log_std": (22,),  # the original DiagGaussian's parameter: std = 0.5 * sigmoid(log_std)
    }


@pytest.fixture(scope="session")
def randomize():
    """``randomize(module, seed)``: the module in eval mode with random weights (std 1/sqrt(fan_in)),
    biases and vectors 0.2 * N(0, 1) (log-stds included) and LayerNorm gains around 1."""
    torch = pytest.importorskip("torch")

    def randomize(module, seed: int):
        gen = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for p in module.parameters():
                noise = torch.randn(p.shape, generator=gen)
                p.copy_(noise / p.shape[-1] ** 0.5 if p.dim() == 2 else 0.2 * noise)
            for m in module.modules():
                if isinstance(m, torch.nn.LayerNorm):
                    m.weight.add_(1.0)
        return module.eval()

    return randomize


@pytest.fixture(scope="session")
def checkpoints(tmp_path_factory) -> dict[str, Path]:
    torch = pytest.importorskip("torch")
    from handover.runtime.benchmark import make_random_checkpoints, random_estimator_state_dict
    from handover.runtime.networks import make_actor

    folder = tmp_path_factory.mktemp("checkpoints")
    paths = make_random_checkpoints(folder, seed=3)
    torch.manual_seed(4)
    paths["recurrent_actor"] = folder / "recurrent_actor.pt"
    torch.save(make_actor(layer_N=1, recurrent_N=1).state_dict(), paths["recurrent_actor"])
    paths["property"] = folder / "property.pt"
    torch.save(random_estimator_state_dict(940, 1, bias_std=0.1), paths["property"])
    return paths


@pytest.fixture(scope="session")
def bundle_dir(checkpoints, tmp_path_factory) -> Path:
    from handover.runtime.export import export_bundle

    out = tmp_path_factory.mktemp("bundle") / "bundle"
    export_bundle(out, checkpoints["actor_agent0"], checkpoints["actor_agent1"], checkpoints["model"],
                  property=checkpoints["property"])
    return out


@pytest.fixture(scope="session")
def recurrent_bundle_dir(checkpoints, tmp_path_factory) -> Path:
    from handover.runtime.export import export_bundle

    out = tmp_path_factory.mktemp("rbundle") / "bundle"
    export_bundle(out, checkpoints["recurrent_actor"], checkpoints["actor_agent1"], checkpoints["model"])
    return out


# -- ROS 2 over real DDS, on this machine only ---------------------------------------------------
# A private domain per test session and localhost-only discovery, so CI runs in parallel never meet.
# Domain ids 1..101: within 0..101, the range the ROS 2 documentation calls safe on Linux (higher ids
# map DDS ports into the ephemeral port range, where they may clash with other programs).
os.environ.setdefault("ROS_DOMAIN_ID", str(1 + os.getpid() % 101))
os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
os.environ.setdefault("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp")


@pytest.fixture
def ros_context():
    """An initialised rclpy context for one test (nodes and executors take ``context=``); shut down after."""
    rclpy = pytest.importorskip("rclpy", reason="rclpy is not installed (pip install 'handover[ros]')")
    context = rclpy.Context()
    rclpy.init(context=context)
    yield context
    context.try_shutdown()


@pytest.fixture(scope="module")
def networks():
    """The config's bundle (the shipped reference policy), loaded once per module with 5 warm-up runs."""
    from handover.runtime.policy_networks import PolicyNetworks

    return PolicyNetworks.load(load_cell_config().models.bundle, warmup=5)


@pytest.fixture
def fast_gil_switch():
    """The GIL switch interval at 1 ms (default 5 ms) for one test: graphs of paced threads in one
    process (ROS harnesses) waited up to twice as long on the GIL with the default."""
    interval = sys.getswitchinterval()
    sys.setswitchinterval(0.001)
    yield
    sys.setswitchinterval(interval)
