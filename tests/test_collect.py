"""Dataset collection with the scripted behaviours, and the fosp CLI around it."""

import json

import numpy as np
import pytest

from fosp.cli import main
from fosp_core.data.collect import (
    REAL_MIX,
    EpisodeSpec,
    collect,
    collect_episode,
    plan_episodes,
    split_counts,
)
from fosp_core.data.dataset import load_dataset, summarize


def test_split_counts():
    assert split_counts(200, [120, 30, 40, 10]) == [120, 30, 40, 10]
    assert split_counts(20, [120, 30, 40, 10]) == [12, 3, 4, 1]
    assert split_counts(7, [1, 1, 1]) == [3, 2, 2]
    assert sum(split_counts(13, [120, 30, 40, 10])) == 13


def test_real_mix_plan_matches_paper():
    specs = plan_episodes("safereach", 200, seed=0, mix="real")
    counts = {}
    for s in specs:
        key = (s.behaviour, s.want_success, s.want_violation)
        counts[key] = counts.get(key, 0) + 1
    assert counts == {(b, succ, viol): n for b, succ, viol, n in REAL_MIX}
    assert [s.index for s in specs] == list(range(200))
    # shuffled, so a partial dataset still mixes behaviours
    assert {s.behaviour for s in specs[:20]} == {"safe", "unsafe"}


def test_sim_mix_plan_and_errors():
    specs = plan_episodes("safereach", 9, seed=1, mix="sim")
    assert sorted(s.behaviour for s in specs) == ["random"] * 3 + ["safe"] * 3 + ["unsafe"] * 3
    assert all(s.want_success is None for s in specs)
    with pytest.raises(ValueError, match="unknown task"):
        plan_episodes("nope", 5, 0, mix="sim")
    with pytest.raises(ValueError, match="exactly one"):
        plan_episodes("safereach", 5, 0)
    with pytest.raises(ValueError, match="unknown mix"):
        plan_episodes("safereach", 5, 0, mix="lab")
    with pytest.raises(ValueError, match=">= 1"):
        plan_episodes("safereach", 0, 0, behaviour="safe")


def test_cover_layouts_gives_every_layout_a_safe_demonstration_in_turn():
    from fosp_core.envs.layouts import all_layouts
    from fosp_core.envs.tasks import TASKS, Layout

    task = "safereach-more-obstacles"
    specs = plan_episodes(task, 60, seed=0, mix="real", cover_layouts=True)
    plain = plan_episodes(task, 60, seed=0, mix="real")
    kinds = [(s.behaviour, s.want_success, s.want_violation) for s in specs]
    assert kinds == [(s.behaviour, s.want_success, s.want_violation) for s in plain]
    assert all(s.layout_index is None for s in plain)
    # 45 safe episodes of 60 (the paper's 150 of 200) take the 28 layouts in turn.
    safe = [s.layout_index for s in specs if s.behaviour == "safe"]
    assert safe == list(range(28)) + list(range(17))
    assert all(s.layout_index is None for s in specs if s.behaviour != "safe")
    # The collected episode is on its spec's layout, with the outcome the spec wants.
    every = all_layouts(TASKS[task])
    for spec in [next(s for s in specs if s.behaviour == "safe" and s.want_success is want)
                 for want in (True, False)]:
        _, meta = collect_episode(spec)
        assert Layout.from_dict(meta["layout"], 3).key == every[spec.layout_index].key
        assert (meta["success"], meta["violation"]) == (spec.want_success, False)


def test_collect_episode_is_deterministic_and_has_wanted_outcome():
    spec = EpisodeSpec(3, "safereach", "unsafe", 11, want_success=False, want_violation=True)
    a_arrays, a_meta = collect_episode(spec)
    b_arrays, b_meta = collect_episode(spec)
    for key in a_arrays:
        np.testing.assert_array_equal(a_arrays[key], b_arrays[key])
    assert a_meta["success"] is False and a_meta["violation"] is True
    assert a_meta["seed"] == b_meta["seed"]
    # Dreamer row convention: 81 rows, row 0 has no action, reward or cost.
    assert a_arrays["image"].shape == (81, 64, 64, 3)
    assert not a_arrays["action"][0].any() and a_arrays["cost"][0] == 0
    assert a_arrays["cost"].sum() > 0 and a_arrays["image"][1:].std() > 0


def test_collect_real_mix_in_worker_processes(tmp_path):
    out = tmp_path / "data"
    collect(out, "safereach", 8, seed=5, mix="real", workers=2, progress=False)
    summary = summarize(load_dataset(out, strict=True))
    want = dict(zip(["safe_success", "safe_fail", "unsafe_success", "unsafe_fail"],
                    split_counts(8, [n for *_, n in REAL_MIX])))
    assert summary["outcomes"] == want
    assert summary["episodes"] == 8


def test_cli_collect_and_info_json(tmp_path, capsys):
    out = tmp_path / "d"
    rc = main(["collect", "--task", "safereach-more-obstacles", "--episodes", "3",
               "--behaviour", "random", "--out", str(out), "--workers", "1", "--seed", "2"])
    assert rc == 0
    assert "wrote 3 trajectories" in capsys.readouterr().out
    # a corrupt file is reported by name and the rest still loads
    (out / "traj_000001.npz").write_bytes(b"not a zip")
    png = tmp_path / "plots" / "returns.png"
    assert main(["dataset", "info", str(out), "--json", "--plot", str(png)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["episodes"] == 2
    assert set(report["by_behaviour"]) == {"random"}
    assert {"success_rate", "violation_rate"} <= set(report["by_behaviour"]["random"])
    assert len(report["errors"]) == 1 and report["errors"][0][0].endswith("traj_000001.npz")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # Another collection into it is refused (it would skew the mix) unless asked for.
    another = ["collect", "--task", "safereach-more-obstacles", "--episodes", "1",
               "--behaviour", "random", "--out", str(out), "--workers", "1"]
    assert main(another) == 2
    assert "holds 3 trajectories of another collection" in capsys.readouterr().err
    assert main([*another, "--add"]) == 0
    assert "wrote 1 trajectory to" in capsys.readouterr().out


def test_collecting_again_adds_only_the_missing_episodes(tmp_path, capsys):
    """An interrupted collection (here: files of it removed, as if it had been killed before
    writing them) is completed by the same command; nothing is duplicated, and the result is
    the one an uninterrupted run writes."""
    whole, resumed = tmp_path / "whole", tmp_path / "resumed"
    command = ["collect", "--task", "safereach", "--episodes", "4", "--mix", "real",
               "--seed", "3", "--workers", "1"]
    assert main([*command, "--out", str(whole)]) == 0
    assert main([*command, "--out", str(resumed)]) == 0
    for name in ("traj_000001.npz", "traj_000003.npz"):
        (resumed / name).unlink()
    capsys.readouterr()
    assert main([*command, "--out", str(resumed)]) == 0
    said = capsys.readouterr().out
    assert "holds 2 of these 4 episodes already: collecting the 2 missing" in said
    assert "wrote 2 trajectories" in said
    assert main([*command, "--out", str(resumed)]) == 0  # complete: nothing to add
    assert "wrote 0 trajectories" in capsys.readouterr().out

    def by_index(directory):
        return {t.meta["intended"]["index"]: t for t in load_dataset(directory, strict=True)}

    a, b = by_index(whole), by_index(resumed)
    assert sorted(a) == sorted(b) == [0, 1, 2, 3]
    for index in a:
        np.testing.assert_array_equal(a[index].arrays["action"], b[index].arrays["action"])
        assert a[index].meta["seed"] == b[index].meta["seed"]
