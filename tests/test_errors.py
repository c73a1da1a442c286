"""The one error path: every bad file, config, parameter, argument or checkpoint a user can give
ends the command with one line that names it, and exit code 2 (no traceback). One case per
row; each was a traceback, a silent skip or a silent success before."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from fosp.cli import main
from fosp_core.util.config import save_yaml
from tests.agent_helpers import tiny_config, write_dataset

REPO = Path(__file__).resolve().parents[1]


def rewrite(path: Path, **changes) -> None:
    """Rewrite a trajectory file with some arrays changed, past the writer's checks."""
    with np.load(path, allow_pickle=False) as npz:
        arrays = {key: npz[key] for key in npz.files}
    arrays.update(changes)
    with open(path, "wb") as file:
        np.savez(file, **arrays)


class Code:
    """An object whose pickle would run code when loaded (torch refuses it)."""

    def __reduce__(self):
        return (os.system, ("echo pwned",))


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A good dataset, a tiny agent config as YAML, a trained run; each case damages a copy."""
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("errors")
    write_dataset(root / "data", episodes=4)
    save_yaml(tiny_config("state"), root / "tiny.yaml")
    assert main(["pretrain", "--data", str(root / "data"), "--preset", str(root / "tiny.yaml"),
                 "--steps", "2", "--out", str(root / "run"), "--ckpt-every", "1"]) == 0
    (root / "bad.yaml").write_text("model:\n  deter: [64\n  hidden: 2\n")
    return root


def damaged_dataset(world: Path, tmp: Path) -> Path:
    import shutil

    data = tmp / "data"
    shutil.copytree(world / "data", data)
    (data / "traj_000000.npz").write_bytes((data / "traj_000000.npz").read_bytes()[:5000])
    (data / "traj_000001.npz").write_bytes(b"")
    with np.load(data / "traj_000002.npz") as npz:
        action = npz["action"].copy()
    action[3, 2] = np.nan
    rewrite(data / "traj_000002.npz", action=action)
    return data


def checkpoint_run(world: Path, tmp: Path, damage: str) -> Path:
    import shutil

    run = tmp / "run"
    shutil.copytree(world / "run", run)
    ckpt = run / "checkpoint.pt"
    if damage == "truncated":
        ckpt.write_bytes(ckpt.read_bytes()[: ckpt.stat().st_size // 2])
    else:
        torch.save({"agent": Code()}, ckpt)
    return run


CASES = {
    # Training on a dataset with unreadable files names each one and stops.
    "unreadable trajectories": (
        lambda w, t: ["pretrain", "--data", str(damaged_dataset(w, t)), "--preset",
                      str(w / "tiny.yaml"), "--steps", "1", "--out", str(t / "r")],
        ["3 of 4 trajectory files are unreadable", "traj_000000.npz", "traj_000001.npz",
         "traj_000002.npz: 'action' contains 1 non-finite", "--skip-bad"]),
    # A state vector narrower than the others': the file, not numpy's concatenate.
    "state width": (
        lambda w, t: ["pretrain", "--data", str(narrow_dataset(w, t)), "--preset",
                      str(w / "tiny.yaml"), "--steps", "1", "--out", str(t / "r")],
        ["traj_000003.npz: 'state' has 20 columns; the dataset's other trajectories have 25"]),
    "malformed agent YAML": (
        lambda w, t: ["pretrain", "--data", str(w / "data"), "--preset", str(w / "bad.yaml"),
                      "--steps", "1", "--out", str(t / "r")],
        ["bad.yaml: not valid YAML at line 3"]),
    "malformed project YAML": (
        lambda w, t: ["bringup", "safereach", "--sim", "--config", str(w / "bad.yaml")],
        ["bad.yaml: not valid YAML at line 3"]),
    "truncated checkpoint": (
        lambda w, t: ["eval", "--run", str(checkpoint_run(w, t, "truncated")), "--episodes", "1"],
        ["checkpoint.pt: not a readable checkpoint, truncated or damaged"]),
    "pickle that runs code": (
        lambda w, t: ["eval", "--run", str(checkpoint_run(w, t, "code")), "--episodes", "1"],
        ["checkpoint.pt: refused: it is not a weights-only checkpoint"]),
    "collect --out a file": (
        lambda w, t: ["collect", "--episodes", "1", "--behaviour", "safe", "--out",
                      str(w / "tiny.yaml")],
        ["tiny.yaml: exists and is not a directory"]),
    "resume with another --obs": (
        lambda w, t: ["pretrain", "--data", str(w / "data"), "--steps", "3", "--out",
                      str(w / "run"), "--resume", "--obs", "image"],
        ["--resume continues", "obs_mode: was 'state', now 'image'"]),
    "resume with another --set": (
        lambda w, t: ["pretrain", "--data", str(w / "data"), "--steps", "3", "--out",
                      str(w / "run"), "--resume", "--set", "actor_critic.horizon=7"],
        ["actor_critic.horizon: was 5, now 7"]),
    "resume with another --preset": (
        lambda w, t: ["pretrain", "--data", str(w / "data"), "--steps", "3", "--out",
                      str(w / "run"), "--resume", "--preset", "paper"],
        ["--resume continues", "batch_size: was 4, now 64"]),
}


def narrow_dataset(world: Path, tmp: Path) -> Path:
    import shutil

    data = tmp / "data"
    shutil.copytree(world / "data", data)
    with np.load(data / "traj_000003.npz") as npz:
        state = npz["state"][:, :20].copy()
    rewrite(data / "traj_000003.npz", state=state)
    return data


@pytest.mark.parametrize("case", list(CASES))
def test_a_bad_input_is_one_line_naming_it_and_exit_code_2(case, world, tmp_path, capsys):
    argv, expected = CASES[case]
    rc = main(argv(world, tmp_path))
    err = capsys.readouterr().err.strip()
    assert rc == 2, err
    assert len(err.splitlines()) == 1 and err.startswith("fosp: error: "), err
    for text in expected:
        assert text in err, (text, err)


def test_skip_bad_trains_on_the_rest_and_says_how_many_it_skipped(world, tmp_path, capsys):
    data = damaged_dataset(world, tmp_path)
    assert main(["pretrain", "--data", str(data), "--preset", str(world / "tiny.yaml"),
                 "--steps", "1", "--out", str(tmp_path / "r"), "--skip-bad"]) == 0
    assert "skipping 3 of 4 trajectory files are unreadable" in capsys.readouterr().err


@pytest.mark.parametrize("argv, said", [
    (["pretrain", "--data", "d", "--steps", "0", "--out", "r"], "--steps: 0 is less than 1"),
    (["pretrain", "--data", "d", "--steps", "-5", "--out", "r"], "--steps: -5 is less than 1"),
    (["collect", "--episodes", "0", "--behaviour", "safe", "--out", "d"],
     "--episodes: 0 is less than 1"),
    (["finetune", "--run", "r", "--out", "o", "--trajectories", "0"],
     "--trajectories: 0 is less than 1"),
    (["extract", "--run", "r", "--out", "o", "--updates", "abc"],
     "--updates: 'abc' is not an integer"),
])
def test_invalid_numbers_are_usage_errors(argv, said, capsys):
    with pytest.raises(SystemExit) as stop:
        main(argv)
    assert stop.value.code == 2
    assert f"error: argument {said}" in capsys.readouterr().err


def test_a_partial_yaml_config_records_the_preset_it_merged_onto(world, tmp_path):
    from fosp_core.agent.config import AgentConfig
    from fosp_core.util.config import load_yaml

    partial = tmp_path / "partial.yaml"
    partial.write_text("obs_mode: state\nmodel:\n  deter: 32\n  hidden: 32\n  stoch: 4\n"
                       "  classes: 4\n  mlp_layers: 1\nbatch_size: 4\nbatch_length: 8\n")
    assert main(["pretrain", "--data", str(world / "data"), "--preset", str(partial),
                 "--steps", "1", "--out", str(tmp_path / "r")]) == 0
    saved = load_yaml(AgentConfig, tmp_path / "r" / "config.yaml")
    assert saved.preset == "cpu" and saved.model.lr == 3e-4  # cpu's, not paper's 1e-4


def test_a_wrong_parameter_type_through_bringup_is_one_line():
    """The node that declares the parameter names it; nothing keeps running."""
    proc = subprocess.run(
        [sys.executable, "-m", "fosp.cli", "bringup", "safereach", "--sim", "--set",
         "learner.grad_steps=abc"], cwd=REPO, capture_output=True, text=True, timeout=120,
        env=dict(os.environ, ROS_DOMAIN_ID="171", OMP_NUM_THREADS="1"))
    assert proc.returncode == 2, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if "error" in line]
    assert errors == [errors[0]] and errors[0].startswith("learner: error: "), proc.stderr
    assert "'grad_steps'" in errors[0] and "Traceback" not in proc.stderr


def test_fosp_tasks_does_not_write_into_the_docs_by_default():
    from fosp.cli import build_parser

    assert build_parser().parse_args(["tasks"]).sheet == "fosp-tasks.png"
