"""Every ``handover`` command, on malformed input an operator can produce, prints one line naming
the value and where it came from, exits 2, and leaves its inputs as they were.

Table-driven: each case builds its files in a temporary folder, runs the command in this process
(``handover.cli.main``: a bug would raise here instead of printing one line) and checks the exit
code, that stderr is exactly one line, that it names what it should, and that no input file changed.
Bags and calibration files are not read by any command yet (recording and calibration come later).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pytest

from handover.cli import main
from handover.runtime.cell_config import DEFAULT_CONFIG_PATH

REPO = Path(__file__).resolve().parent.parent
BUNDLE = REPO / "launch" / "reference_bundle"


@dataclass
class Case:
    name: str
    argv: Callable[[Path], list[str]]  # tmp -> argv (after "handover")
    names: Callable[[Path], str]  # tmp -> the text the one line must contain
    setup: Callable[[Path], None] = lambda tmp: None


def _digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


# -- inputs ---------------------------------------------------------------------------------------


def write(path: Path, data: bytes | str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data if isinstance(data, bytes) else data.encode())


def config_text(**replace) -> str:
    """The default config, its bundle made absolute (a copy elsewhere resolves paths from there)."""
    text = DEFAULT_CONFIG_PATH.read_text().replace("bundle: reference_bundle", f"bundle: {BUNDLE}", 1)
    for old, new in replace.items():
        assert old in text, old
        text = text.replace(old, new, 1)
    return text


def bundle_copy(tmp: Path, edit: Callable[[Path], None] = lambda b: None) -> Path:
    b = tmp / "bundle"
    shutil.copytree(BUNDLE, b)
    edit(b)
    return b


def manifest_edit(fn: Callable[[dict], None]) -> Callable[[Path], None]:
    def edit(b: Path) -> None:
        m = json.loads((b / "manifest.json").read_text())
        fn(m)
        (b / "manifest.json").write_text(json.dumps(m))
    return edit


def replay_log(tmp: Path, name: str = "log.npz") -> Path:
    T = 3
    p = tmp / name
    np.savez(p, thrower_q=np.zeros((T, 22)), catcher_q=np.zeros((T, 22)), object_pos=np.zeros((T, 3)),
             goal_pos=np.zeros(3), actions=np.zeros((T, 44)), predicted_goal=np.zeros((T, 3)))
    return p


def truncated(src: Path, dst: Path) -> None:
    data = src.read_bytes()
    dst.write_bytes(data[: len(data) // 2])


def ckpt(tmp: Path, name: str, data: bytes) -> Path:
    write(tmp / name, data)
    return tmp / name


def eval_argv(bundle: str) -> list[str]:
    return ["eval", "--bundle", bundle, "--episodes", "1", "--json", "out/eval.json", "--no-progress"]


CASES = [
    # -- cell config ------------------------------------------------------------------------------
    Case("config missing", lambda t: ["config", str(t / "nope.yaml")], lambda t: "nope.yaml"),
    Case("config is a folder", lambda t: ["config", str(t)], lambda t: str(t)),
    Case("config empty", lambda t: ["config", str(t / "c.yaml")], lambda t: "c.yaml",
         lambda t: write(t / "c.yaml", "")),
    Case("config not YAML", lambda t: ["config", str(t / "c.yaml")], lambda t: "c.yaml",
         lambda t: write(t / "c.yaml", "control_rate_hz: [20\n")),
    Case("config binary", lambda t: ["config", str(t / "c.yaml")], lambda t: "c.yaml",
         lambda t: write(t / "c.yaml", b"\xff\xfe\x00\x01garbage")),
    Case("config key twice", lambda t: ["config", str(t / "c.yaml")], lambda t: "control_rate_hz",
         lambda t: write(t / "c.yaml", "control_rate_hz: 20\n" + config_text())),
    Case("config bundle is a file", lambda t: ["config", str(t / "c.yaml")], lambda t: "bundle",
         lambda t: (write(t / "f.txt", "x"), write(t / "c.yaml", config_text(**{f"bundle: {BUNDLE}": f"bundle: {t / 'f.txt'}"})))),
    Case("config bundle without manifest", lambda t: ["config", str(t / "c.yaml")], lambda t: "manifest",
         lambda t: ((t / "empty").mkdir(), write(t / "c.yaml", config_text(**{f"bundle: {BUNDLE}": f"bundle: {t / 'empty'}"})))),
    # -- bundle folder, manifest and ONNX files ----------------------------------------------------
    Case("bundle missing", lambda t: eval_argv(str(t / "nobundle")), lambda t: "nobundle"),
    Case("bundle is a file", lambda t: eval_argv(str(t / "f.txt")), lambda t: "f.txt", lambda t: write(t / "f.txt", "x")),
    Case("bundle without manifest", lambda t: eval_argv(str(t / "empty")), lambda t: "manifest",
         lambda t: (t / "empty").mkdir()),
    Case("manifest not JSON", lambda t: eval_argv(str(t / "bundle")), lambda t: "manifest.json",
         lambda t: bundle_copy(t, lambda b: (b / "manifest.json").write_text("{not json"))),
    Case("manifest networks a list", lambda t: eval_argv(str(t / "bundle")), lambda t: "networks",
         lambda t: bundle_copy(t, manifest_edit(lambda m: m.__setitem__("networks", list(m["networks"]))))),
    Case("manifest is a list", lambda t: eval_argv(str(t / "bundle")), lambda t: "manifest.json",
         lambda t: bundle_copy(t, lambda b: (b / "manifest.json").write_text("[1, 2]"))),
    Case("manifest network file missing", lambda t: eval_argv(str(t / "bundle")), lambda t: "thrower_actor.onnx",
         lambda t: bundle_copy(t, lambda b: (b / "thrower_actor.onnx").unlink())),
    Case("onnx 0 bytes", lambda t: eval_argv(str(t / "bundle")), lambda t: "thrower_actor.onnx",
         lambda t: bundle_copy(t, lambda b: (b / "thrower_actor.onnx").write_bytes(b""))),
    Case("onnx garbage", lambda t: eval_argv(str(t / "bundle")), lambda t: "goal_estimator.onnx",
         lambda t: bundle_copy(t, lambda b: (b / "goal_estimator.onnx").write_bytes(b"\x08\x07garbage" * 10))),
    Case("onnx truncated", lambda t: eval_argv(str(t / "bundle")), lambda t: "catcher_actor.onnx",
         lambda t: bundle_copy(t, lambda b: truncated(BUNDLE / "catcher_actor.onnx", b / "catcher_actor.onnx"))),
    # -- replay logs ------------------------------------------------------------------------------
    Case("log missing", lambda t: ["contract", "replay", str(t / "no.npz"), str(t / "o.npz")], lambda t: "no.npz"),
    Case("log is a folder", lambda t: ["contract", "replay", str(t), str(t / "o.npz")], lambda t: "folder"),
    Case("log empty", lambda t: ["contract", "replay", str(t / "e.npz"), str(t / "o.npz")], lambda t: "e.npz",
         lambda t: write(t / "e.npz", b"")),
    Case("log truncated", lambda t: ["contract", "replay", str(t / "tr.npz"), str(t / "o.npz")], lambda t: "tr.npz",
         lambda t: truncated(replay_log(t), t / "tr.npz")),
    Case("log is .npy", lambda t: ["contract", "replay", str(t / "a.npz"), str(t / "o.npz")], lambda t: "a.npz",
         lambda t: (np.save(t / "a.npy", np.zeros(3)), (t / "a.npy").rename(t / "a.npz"))),
    Case("log zip of garbage", lambda t: ["contract", "replay", str(t / "z.npz"), str(t / "o.npz")], lambda t: "z.npz",
         lambda t: zipfile.ZipFile(t / "z.npz", "w").writestr("thrower_q.npy", b"garbage")),
    Case("log lacks arrays", lambda t: ["contract", "replay", str(t / "l.npz"), str(t / "o.npz")], lambda t: "l.npz",
         lambda t: np.savez(t / "l.npz", thrower_q=np.zeros((3, 22)))),
    Case("replay output = input", lambda t: ["contract", "replay", str(t / "log.npz"), str(t / "log.npz")],
         lambda t: "overwrite", lambda t: replay_log(t)),
    Case("replay output without .npz", lambda t: ["contract", "replay", str(t / "log.npz"), str(t / "out")],
         lambda t: ".npz", lambda t: replay_log(t)),
    Case("replay output under a file", lambda t: ["contract", "replay", str(t / "log.npz"), str(t / "f.txt" / "o.npz")],
         lambda t: "f.txt", lambda t: (replay_log(t), write(t / "f.txt", "x"))),
    # -- bags (handover replay) --------------------------------------------------------------------
    Case("bag missing", lambda t: ["replay", str(t / "nobag")], lambda t: "nobag"),
    Case("bag empty folder", lambda t: ["replay", str(t / "bag")], lambda t: "bag", lambda t: (t / "bag").mkdir()),
    Case("bag not mcap", lambda t: ["replay", str(t / "bag")], lambda t: "bag",
         lambda t: write(t / "bag" / "bag.mcap", b"this is not an mcap file at all" * 4)),
    Case("bag 0 bytes", lambda t: ["replay", str(t / "bag")], lambda t: "bag",
         lambda t: write(t / "bag" / "bag.mcap", b"")),
    Case("bag truncated magic", lambda t: ["replay", str(t / "bag")], lambda t: "bag",
         lambda t: write(t / "bag" / "bag.mcap", b"\x89MCAP0\r\n\x01\x00")),
    Case("record into an existing bag", lambda t: ["record", str(t / "bag"), "--duration", "1"], lambda t: "bag",
         lambda t: (t / "bag").mkdir()),
    # -- calibration inputs and files ---------------------------------------------------------------
    Case("gains recording missing", lambda t: ["calibrate", "gains", str(t / "rec.npz")], lambda t: "rec.npz"),
    Case("gains bag not mcap", lambda t: ["calibrate", "gains", str(t / "bag")], lambda t: "bag",
         lambda t: write(t / "bag" / "bag.mcap", b"this is not an mcap file at all" * 4)),
    Case("gains bag empty folder", lambda t: ["calibrate", "gains", str(t / "bag")], lambda t: "bag",
         lambda t: (t / "bag").mkdir()),
    Case("gains recording not npz", lambda t: ["calibrate", "gains", str(t / "rec.npz")], lambda t: "rec.npz",
         lambda t: write(t / "rec.npz", "x")),
    Case("gains recording lacks arrays", lambda t: ["calibrate", "gains", str(t / "rec.npz")], lambda t: "missing arrays",
         lambda t: np.savez(t / "rec.npz", commands=np.zeros((3, 2)))),
    Case("extrinsics intrinsics missing", lambda t: ["calibrate", "extrinsics", str(t / "a.png"), "--serial", "1",
                                                     "--intrinsics", str(t / "intr.yaml"), "--board-pose", str(t / "p.yaml"),
                                                     "--out", str(t / "out")], lambda t: "intr.yaml",
         lambda t: write(t / "a.png", b"\x89PNG")),
    # -- checkpoints (export) ---------------------------------------------------------------------
    Case("checkpoint missing", lambda t: ["export", "--thrower", str(t / "a0.pt"), "--catcher", str(t / "a1.pt"),
                                          "--goal", str(t / "m.pt"), "--out", str(t / "b")], lambda t: "a0.pt"),
    Case("checkpoint garbage", lambda t: ["export", "--thrower", str(t / "a0.pt"), "--catcher", str(t / "a0.pt"),
                                          "--goal", str(t / "a0.pt"), "--out", str(t / "b")], lambda t: "a0.pt",
         lambda t: ckpt(t, "a0.pt", b"not a checkpoint")),
    Case("export out under a file", lambda t: ["export", "--thrower", str(t / "a0.pt"), "--catcher", str(t / "a0.pt"),
                                               "--goal", str(t / "a0.pt"), "--out", str(t / "f.txt" / "b")],
         lambda t: "f.txt", lambda t: (ckpt(t, "a0.pt", b"x"), write(t / "f.txt", "x"))),
    # -- command-line values ----------------------------------------------------------------------
    Case("eval episodes negative", lambda t: ["eval", "--episodes", "-1", "--json", str(t / "e.json")], lambda t: "-1"),
    Case("eval episodes not a number", lambda t: ["eval", "--episodes", "ten", "--json", str(t / "e.json")], lambda t: "ten"),
    Case("eval mass factors", lambda t: ["eval", "--mass-factors", "1,heavy", "--json", str(t / "e.json")], lambda t: "heavy"),
    Case("eval mass factor zero", lambda t: ["eval", "--mass-factors", "0", "--json", str(t / "e.json")], lambda t: "0"),
    Case("eval json under a file", lambda t: ["eval", "--episodes", "1", "--json", str(t / "f.txt" / "e.json")],
         lambda t: "f.txt", lambda t: write(t / "f.txt", "x")),
    Case("eval json is a folder", lambda t: ["eval", "--episodes", "1", "--json", str(t)], lambda t: "folder"),
    Case("eval steps zero", lambda t: ["eval", "--steps", "0", "--json", str(t / "e.json")], lambda t: "0"),
    Case("bringup speed zero", lambda t: ["bringup", "--speed", "0"], lambda t: "0"),
    Case("bringup episodes negative", lambda t: ["bringup", "--episodes", "-2"], lambda t: "-2"),
    Case("bringup timeout nan", lambda t: ["bringup", "--timeout", "nan"], lambda t: "nan"),
    Case("benchmark steps zero", lambda t: ["benchmark", "--steps", "0"], lambda t: "0"),
    Case("twin benchmark seconds negative", lambda t: ["twin", "benchmark", "--seconds", "-1"], lambda t: "-1"),
    Case("twin render size zero", lambda t: ["twin", "render", "--width", "0", "--out", str(t / "fr")], lambda t: "0"),
    Case("twin render out is a file", lambda t: ["twin", "render", "--out", str(t / "f.txt")], lambda t: "f.txt",
         lambda t: write(t / "f.txt", "x")),
    Case("mjcf out is a folder", lambda t: ["twin", "export-mjcf", str(t)], lambda t: "folder"),
    Case("mjcf out without .xml", lambda t: ["twin", "export-mjcf", str(t / "model")], lambda t: ".xml"),
    Case("train-reference episodes zero", lambda t: ["train-reference", "--episodes", "0", "--out", str(t / "b")], lambda t: "0"),
    Case("config of a command missing", lambda t: ["eval", "--config", str(t / "c.yaml"), "--json", str(t / "e.json")],
         lambda t: "c.yaml"),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_malformed_input_is_one_line_and_exit_2(case, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    case.setup(tmp_path)
    before = _digest(tmp_path)
    rc = main(case.argv(tmp_path))
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert rc == 2, err
    assert len(lines) == 1, err
    assert "Traceback" not in err
    assert case.names(tmp_path) in lines[0], lines[0]
    after = {k: v for k, v in _digest(tmp_path).items() if k in before}
    assert after == before, "an input changed"


# -- demonstrations: no command reads them (train-reference records its own); their loader's errors


@pytest.mark.parametrize("make", [
    lambda t: None,
    lambda t: write(t / "d.npz", b""),
    lambda t: write(t / "d.npz", b"PK\x03\x04truncated"),
    lambda t: (np.save(t / "d.npy", np.zeros(3)), (t / "d.npy").rename(t / "d.npz")),
    lambda t: np.savez(t / "d.npz", x=np.zeros(3)),
    lambda t: (t / "d.npz").mkdir(),
], ids=["missing", "empty", "truncated", "npy", "no format", "folder"])
def test_malformed_demonstrations_are_an_input_error_naming_the_file(make, tmp_path):
    from handover.runtime.errors import InputError
    from handover.sim_twin.demonstrations import load

    make(tmp_path)
    with pytest.raises(InputError, match="d.npz"):
        load(tmp_path / "d.npz")
