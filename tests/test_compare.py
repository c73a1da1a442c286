"""`fosp compare`: fine-tuning reports pooled over seeds, PEX set against direct fine-tuning."""

import json

import pytest
import yaml

from fosp.cli import main
from fosp_core.data.dataset import DatasetWriter
from fosp_core.learning.finetune_compare import (
    closest_direct,
    format_comparison,
    load_report,
    paired_violations,
    pool,
)
from fosp_core.util.stats import difference_interval, sign_test
from tests.agent_helpers import make_trajectory


def _row(episodes, successes, violating, **extra):
    return {"episodes": episodes, "success_rate": successes / episodes,
            "violation_rate": violating / episodes, **extra}


def write_run(root, name, task, pex, seed, during_violating, fosp=None, after=(18, 1)):
    out = root / name
    out.mkdir(parents=True)
    report = {"task": task, "pex": pex, "seed": seed, "algo": "fosp", "obs_mode": "image",
              "trajectories": 40, "grad_steps": 40, "deterministic": True,
              "before": _row(20, 19, 4), "during": _row(40, 36, during_violating,
                                                          cost_regret=0.01 * during_violating),
              "after": _row(20, *after)}
    (out / "report.json").write_text(json.dumps(report))
    (out / "config.yaml").write_text(yaml.safe_dump({"algo": "fosp", "fosp": fosp or {}}))
    return out


@pytest.fixture
def runs(tmp_path):
    """more-obstacles: direct seeds 0-2 (2, 1, 1 violating), PEX seeds 0-2 (2, 2, 0) with a
    PEX-only setting, and PEX seed 0 again without it; target-shape: PEX only."""
    task = "safereach-more-obstacles"
    paths = [write_run(tmp_path, f"d{s}", task, False, s, v, {"foresight_stop": 0.5})
             for s, v in enumerate((2, 1, 1))]
    paths += [write_run(tmp_path, f"p{s}", task, True, s, v,
                        {"foresight_stop": 0.5, "foresight_veto": True})
              for s, v in enumerate((2, 2, 0))]
    paths.append(write_run(tmp_path, "plain", task, True, 0, 5, {"foresight_stop": 0.5,
                                                                "foresight_veto": False}))
    paths.append(write_run(tmp_path, "t0", "safereach-target-shape", True, 0, 0))
    return paths


def test_pool_sums_counts_over_seeds_and_names_what_differs(runs):
    groups = pool([load_report(p) for p in runs])
    labels = [(g.task, g.label) for g in groups]
    assert labels == [
        ("safereach-more-obstacles", "direct"),
        ("safereach-more-obstacles", "PEX, foresight_veto=False"),
        ("safereach-more-obstacles", "PEX, foresight_veto=True"),
        ("safereach-target-shape", "PEX"),  # its only run: nothing to tell apart
    ]
    direct, plain, veto, _ = groups
    assert direct.seeds == [0, 1, 2] and direct.during_violating == [2, 1, 1]
    assert direct.counts == {"before": [57, 12, 60], "during": [108, 4, 120],
                             "after": [54, 3, 60]}
    assert veto.counts["during"] == [108, 4, 120] and plain.counts["during"] == [36, 5, 40]
    assert veto.rate("during", "violation")[0] == pytest.approx(4 / 120)
    assert closest_direct(veto, groups) is direct
    assert closest_direct(groups[3], groups) is None  # no direct run of target-shape


def test_a_setting_an_older_run_lacks_counts_as_its_default(runs, tmp_path):
    # Direct seed 3 ran before fosp.hold_on_success existed: its config lacks the key.
    old = write_run(tmp_path, "d3", "safereach-more-obstacles", False, 3, 0,
                    {"foresight_stop": 0.5})
    config = yaml.safe_load((old / "config.yaml").read_text())
    for path in runs[:3]:  # the other direct runs left it at its default, False
        fosp = dict(config["fosp"], hold_on_success=False)
        (path / "config.yaml").write_text(yaml.safe_dump(dict(config, fosp=fosp)))
    groups = pool([load_report(p) for p in [*runs, old]])
    direct = groups[0]
    assert direct.label == "direct" and direct.seeds == [0, 1, 2, 3]
    assert load_report(old)[1]["hold_on_success"] is False
    assert load_report(old)[1]["foresight_stop"] == 0.5  # the saved value wins


def write_online(out, episode_seeds, violated):
    """Stored fine-tuning trajectories in ``out/online_data``, as ``fosp finetune`` keeps them."""
    writer = DatasetWriter(out / "online_data")
    for episode, bad in zip(episode_seeds, violated):
        arrays = make_trajectory(episode, steps=4)
        arrays["cost"][:] = 0.0
        arrays["cost"][2] = float(bad)
        writer.add(arrays, {"task": "safereach-more-obstacles", "behaviour": "policy",
                            "seed": episode, "layout": {}})


def test_runs_of_one_seed_are_paired_by_episode_seed(runs):
    d0, p0 = runs[0], runs[3]  # direct and PEX (foresight_veto=True), both seed 0
    write_online(d0, [0, 1, 2, 3, 4], [True, True, False, True, False])
    write_online(p0, [0, 1, 2, 3, 5], [True, False, True, False, True])
    # Seed 1: direct has stored trajectories, PEX none (an older run): nothing to pair.
    write_online(runs[1], [1000, 1001], [True, True])
    groups = pool([load_report(p) for p in runs])
    direct, _, veto, _ = groups
    assert direct.episodes[0] == {0: True, 1: True, 2: False, 3: True, 4: False}
    # Episodes 0-3 pair (4 and 5 have no partner): both violated on 0, direct alone on 1
    # and 3, PEX alone on 2.
    assert paired_violations(veto, direct) == (1, 2, 1, 4)
    assert paired_violations(direct, veto) == (2, 1, 1, 4)
    text = format_comparison(groups)
    assert (f"paired by layout (4 trajectories): PEX, foresight_veto=True alone violated in 1, "
            f"direct alone in 2, both in 1 (exact sign test p = {sign_test(1, 2):.2f})") in text
    # The PEX variant without stored trajectories gets no paired line.
    assert text.count("paired by layout") == 1


def test_comparison_text_sets_pex_against_direct(runs):
    text = format_comparison(pool([load_report(p) for p in runs]))
    assert "paired by layout" not in text  # no stored trajectories to pair
    assert "4/120 (2, 1, 1)" in text and "4/120 (2, 2, 0)" in text and "5/40 (5)" in text
    low, high = difference_interval(4, 120, 4, 120)
    # Same pooled count: no difference; seed 2 had fewer (0 < 1), seeds 0 and 1 did not.
    assert (f"PEX, foresight_veto=True  against  direct: violating while fine-tuning +0.0% "
            f"(95% CI {low:+.1%} to {high:+.1%}), fewer in 1 of 3 shared seeds; cost regret "
            f"0.013 against 0.013, lower in 1 of 3") in text  # 0.01 per violating trajectory
    low, high = difference_interval(5, 40, 4, 120)
    assert (f"+9.2% (95% CI {low:+.1%} to {high:+.1%}), fewer in 0 of 1 shared seeds; "
            f"cost regret 0.050 against 0.013, lower in 0 of 1") in text


def test_cli_prints_the_table_and_draws_the_plot(runs, tmp_path, capsys):
    plot = tmp_path / "compare.png"
    assert main(["compare", *map(str, runs), "--plot", str(plot)]) == 0
    out = capsys.readouterr().out
    assert "safereach-target-shape" in out and plot.read_bytes()[:4] == b"\x89PNG"


def test_bad_input_is_a_clear_error(runs, tmp_path, capsys):
    assert main(["compare", str(tmp_path / "nowhere")]) == 2
    assert "no report.json" in capsys.readouterr().err
    assert main(["compare", str(runs[0]), str(runs[0])]) == 2  # the same run twice
    assert "seed 0" in capsys.readouterr().err
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "report.json").write_text(json.dumps({"task": "t"}))
    assert main(["compare", str(tmp_path / "other")]) == 2
    assert "not a fine-tuning report" in capsys.readouterr().err


def test_offline_control_totals_per_method(runs):
    # Direct seeds 0 and 1 rolled out the offline policy alone on their layouts; seed 2 ran
    # before the control existed, so the direct row has no total; the PEX rows all have it.
    def add_control(path, violating, added, avoided):
        report = json.loads((path / "report.json").read_text())
        report["offline_control"] = {"trajectories": 40, "violating": violating,
                                     "added": added, "avoided": avoided}
        (path / "report.json").write_text(json.dumps(report))

    add_control(runs[0], 2, 1, 1)
    add_control(runs[1], 1, 0, 0)
    for path, counts in zip(runs[3:6], [(1, 1, 0), (0, 2, 0), (3, 0, 3)]):
        add_control(path, *counts)
    text = format_comparison(pool([load_report(p) for p in runs]))
    assert ("PEX, foresight_veto=True: the offline policy alone violated on 4 of the same 120 "
            "layouts; fine-tuning added 3, avoided 3") in text
    assert "direct: the offline policy alone" not in text  # seed 2 lacks it
