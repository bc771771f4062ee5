"""``handover contract replay IN.npz OUT.npz``: run a logged sequence through the contract.

For operators who must check what a policy saw. Step 0 is the first step after start-up: object
history and frame stack empty, targets at the default pose. The replay adds no noise: the live
policy's history noise (``history_noise`` in the cell config, fresh per step) is not in the log, so
the catcher's 12 history inputs of each frame differ from a live run's by up to that amount; every
other input and every target is reproduced exactly.

IN (``.npz``):
    thrower_q (T, 22), catcher_q (T, 22)   measured joint positions, rad, contract order
    object_pos (T, 3)                      tracked object position, world frame, m
    goal_pos (3,)                          throwing goal, world frame, m
    actions (T, 44)                        raw policy outputs (thrower ++ catcher)
    predicted_goal (T, 3), optional        goal-estimator output, world frame, m; if absent the
                                           bundle's goal estimator computes it
OUT (``.npz``):
    thrower_input (T, 450), catcher_input (T, 450)  the actors' inputs
    object_history (T, 60)                          goal-estimator input (relative to the thrower base)
    targets (T, 44)                                 joint targets after each action, rad
    predicted_goal (T, 3)                           the predicted goal used, world frame, m
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np

from handover.runtime.cell_config import DEFAULT_CONFIG_PATH, load_cell_config
from handover.runtime.contract import AGENT_INPUT_SIZE, DOFS, HISTORY_LEN, ContractSpec
from handover.runtime.contract_state import ContractState
from handover.runtime.errors import InputError
from handover.runtime.files import load_npz, output_file, save_npz
from handover.runtime.policy_networks import Network

# name -> shape, with "T" for the number of steps
IN_ARRAYS = {
    "thrower_q": ("T", 22),
    "catcher_q": ("T", 22),
    "object_pos": ("T", 3),
    "goal_pos": (3,),
    "actions": ("T", DOFS),
}
OPTIONAL_IN_ARRAYS = {"predicted_goal": ("T", 3)}


def check_log(arrays: dict[str, np.ndarray], source: str = "input") -> int:
    """Validate a replay log; return T. Errors name the array, its shape and the file."""
    steps: Optional[int] = None
    wanted = dict(IN_ARRAYS)
    wanted.update({k: v for k, v in OPTIONAL_IN_ARRAYS.items() if k in arrays})
    for name, shape in wanted.items():
        if name not in arrays:
            raise InputError(f"{source}: array {name!r} missing (need {sorted(IN_ARRAYS)})")
        a = np.asarray(arrays[name])
        if not (np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.integer)):
            raise InputError(f"{source}: array {name!r} has dtype {a.dtype}, expected numbers")
        expect = tuple(steps if d == "T" and steps is not None else d for d in shape)
        if a.ndim != len(shape) or any(e != "T" and e != s for e, s in zip(expect, a.shape)):
            raise InputError(f"{source}: array {name!r} has shape {a.shape}, expected {_fmt(shape, steps)}")
        if shape[0] == "T":
            steps = a.shape[0] if steps is None else steps
        if not np.isfinite(a).all():
            where = np.argwhere(~np.isfinite(a))[0].tolist()
            raise InputError(f"{source}: array {name!r} has a non-finite value at index {where}")
    if not steps:
        raise InputError(f"{source}: the log has no steps (T = 0)")
    return steps


def _fmt(shape: tuple, steps: Optional[int]) -> str:
    return "(" + ", ".join(str(steps if d == "T" and steps is not None else d) for d in shape) + ("," if len(shape) == 1 else "") + ")"


def replay(spec: ContractSpec, arrays: dict[str, np.ndarray], goal_estimator: Optional[Network] = None) -> dict[str, np.ndarray]:
    """Run the log through a fresh :class:`ContractState`; see the module doc for IN and OUT."""
    steps = check_log(arrays)
    logged_goal = arrays.get("predicted_goal")
    if logged_goal is None and goal_estimator is None:
        raise InputError("the log has no 'predicted_goal' and no bundle with a goal estimator was given")
    out = {
        "thrower_input": np.zeros((steps, AGENT_INPUT_SIZE), np.float32),
        "catcher_input": np.zeros((steps, AGENT_INPUT_SIZE), np.float32),
        "object_history": np.zeros((steps, HISTORY_LEN * 3), np.float32),
        "targets": np.zeros((steps, DOFS), np.float32),
        "predicted_goal": np.zeros((steps, 3), np.float32),
    }
    state = ContractState(spec)
    state.reset()
    if goal_estimator is not None:
        goal_estimator.reset()
    goal = np.asarray(arrays["goal_pos"], np.float32)
    for t in range(steps):
        hist = state.push_object(arrays["object_pos"][t])
        if logged_goal is not None:
            pred_rel = np.asarray(logged_goal[t], np.float32) - spec.thrower_base
        else:
            pred_rel = np.asarray(goal_estimator.run(hist), np.float32).reshape(3)
        t_in, c_in = state.inputs(arrays["thrower_q"][t], arrays["catcher_q"][t], goal, pred_rel)
        out["thrower_input"][t] = t_in
        out["catcher_input"][t] = c_in
        out["object_history"][t] = hist
        out["targets"][t] = state.apply(arrays["actions"][t])
        out["predicted_goal"][t] = pred_rel + spec.thrower_base
    return out


def add_parser(sub) -> None:
    contract = sub.add_parser("contract", help="tools for the observation/action contract")
    csub = contract.add_subparsers(dest="contract_command", metavar="TOOL", required=True)
    p = csub.add_parser("replay", help="run a logged sequence (npz) through the contract", description=__doc__,
                        formatter_class=__import__("argparse").RawDescriptionHelpFormatter)
    p.add_argument("input", type=Path, help="IN.npz")
    p.add_argument("output", type=Path, help="OUT.npz")
    p.add_argument("--config", type=Path, default=DEFAULT_CONFIG_PATH, help="cell config (default: %(default)s)")
    p.add_argument("--bundle", type=Path, default=None,
                   help="policy bundle whose goal estimator fills in a missing predicted_goal (default: the config's)")
    p.set_defaults(func=run)


def run(args) -> int:
    cfg = load_cell_config(args.config)
    arrays = load_npz(args.input, "replay log")
    output_file(args.output, "replay output", ".npz", inputs=[args.input, args.config, args.bundle])
    check_log(arrays, source=str(args.input))
    goal_estimator = None
    if "predicted_goal" not in arrays:
        bundle = args.bundle or cfg.models.bundle
        if bundle is None:
            raise InputError(f"{args.input}: no 'predicted_goal' array; pass --bundle DIR to compute it")
        from handover.runtime.policy_networks import load_goal_estimator

        goal_estimator = load_goal_estimator(bundle)
    out = replay(ContractSpec.from_config(cfg), arrays, goal_estimator)
    save_npz(args.output, out)
    steps = out["targets"].shape[0]
    source = "log" if goal_estimator is None else f"goal estimator of {bundle}"
    print(f"replayed {steps} steps of {args.input} (predicted goal from the {source}) -> {args.output}")
    return 0
