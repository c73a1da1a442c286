"""``fosp compare``: pool ``fosp finetune`` (or ``fosp demo``) reports over seeds.

One fine-tuning run violates in a handful of its 40 trajectories, so two runs' rows differ
by noise as often as by method. This pools runs of the same task and the same settings
(all seeds together) and, for each task, sets every variant against direct fine-tuning:
how many fine-tuning trajectories violated, with a 95% interval of the difference.

Runs of a task are told apart by their method (PEX or direct, the algorithm) and by any
setting of the ``fosp`` config, trajectories, gradient steps or acting mode that is not the
same in all that task's runs of the method, so "PEX, foresight_stop=0.5" and
"PEX, foresight_stop=0" stay two rows.

The pooled trajectories of one run are not independent draws (the policy learns between
them); the intervals treat them as if they were and so are, if anything, too narrow.

Runs of the same seed are also compared trajectory by trajectory. ``fosp finetune`` rolls
out trajectory i on the twin's episode seed ``finetune_run.episode_seed(seed, i)`` whatever
the method, and the episode seed alone draws the layout, so PEX and direct fine-tuning of one
seed face the same layouts in the same order. Where both violate, the layout was hard for
both; only the trajectories where one alone violated tell the methods apart, which the exact
sign test weighs. The pairs come from each run's stored trajectories (``online_data``),
matched by episode seed; reports without them (or with no seed there, as a ROS demo's) are
not paired. Runs that rolled out the offline policy alone on the same layouts (the report's
``offline_control``) also say how many violations learning added and how many it avoided.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fosp_core.agent.config import FospConfig
from fosp_core.data.dataset import load_index
from fosp_core.util import jsonfile
from fosp_core.util.files import read_mapping, save_figure
from fosp_core.util.stats import difference_interval, sign_test, wilson_interval

ROWS = ("before", "during", "after")
# Report fields that change what a run measures (besides its seed and task).
REPORT_SETTINGS = ("algo", "obs_mode", "trajectories", "grad_steps", "deterministic")


@dataclass
class Group:
    """The runs of one task and one method / settings, pooled."""

    task: str
    label: str
    pex: bool
    settings: dict = field(default_factory=dict)  # those of its first run (all runs share them)
    seeds: list[int] = field(default_factory=list)
    # row -> [successes, violating episodes, episodes], summed over the runs
    counts: dict[str, list[int]] = field(default_factory=dict)
    during_violating: list[int] = field(default_factory=list)  # per run, in seed order
    cost_regret: list[float] = field(default_factory=list)
    # per run, in seed order: episode seed -> whether that fine-tuning trajectory violated
    episodes: list[dict[int, bool]] = field(default_factory=list)
    # per run: the report's offline_control (violating / added / avoided), or None
    control: list[dict | None] = field(default_factory=list)

    def rate(self, row: str, name: str) -> tuple[float, float, float]:
        """(rate, low, high) of 'success' or 'violation' in ``row``, pooled."""
        successes, violating, n = self.counts[row]
        hits = successes if name == "success" else violating
        return (hits / n, *wilson_interval(hits, n))


def load_report(path: str | os.PathLike) -> tuple[dict, dict, dict[int, bool]]:
    """(report.json, the run's config.yaml ``fosp`` section, its stored fine-tuning
    trajectories as episode seed -> violated) of a fine-tuning output dir."""
    path = Path(path)
    report_path = path / "report.json" if path.is_dir() else path
    if not report_path.is_file():
        raise FileNotFoundError(f"{path}: no report.json (is it a `fosp finetune --out` dir?)")
    report = json.loads(report_path.read_text())
    missing = [k for k in ("task", "pex", "seed", *ROWS) if k not in report]
    if missing:
        raise ValueError(f"{report_path}: not a fine-tuning report (no {', '.join(missing)})")
    config_path = report_path.parent / "config.yaml"
    fosp = {}
    if config_path.is_file():
        saved = read_mapping(config_path).get("fosp", {}) or {}
        # A setting an older run's config lacks was not an option yet when it ran: the run
        # behaved as its default (new options default to the behaviour before them), so it
        # pools with later runs that left it at that default.
        fosp = {**dataclasses.asdict(FospConfig()), **saved}
    return report, fosp, _episodes(report_path.parent / "online_data")


def _episodes(directory: Path) -> dict[int, bool]:
    """Episode seed -> violated, for the trajectories stored in ``directory`` that name one."""
    if not directory.is_dir():
        return {}
    return {int(r["seed"]): bool(r["violation"]) for r in load_index(directory)
            if r.get("seed") is not None}


def _settings(report: dict, fosp: dict) -> dict:
    settings = {k: report.get(k) for k in REPORT_SETTINGS}
    settings.update({f"fosp.{k}": v for k, v in fosp.items()})
    return settings


def pool(runs: list[tuple[dict, dict, dict[int, bool]]]) -> list[Group]:
    """Group ``load_report`` results by task, method and differing settings; sum counts."""
    if not runs:
        raise ValueError("no runs to compare")
    alike: dict[tuple[str, str], list[dict]] = {}  # (task, method) -> each run's settings
    for report, fosp, _ in runs:
        alike.setdefault((report["task"], _method(report)), []).append(_settings(report, fosp))
    groups: dict[tuple[str, str], Group] = {}
    for (report, fosp, episodes) in sorted(runs, key=lambda r: (r[0]["task"], r[0]["seed"])):
        method = _method(report)
        settings = _settings(report, fosp)
        others = alike[report["task"], method]
        keys = dict.fromkeys(k for s in others for k in s)
        varying = [k for k in keys if len({json.dumps(s.get(k)) for s in others}) > 1]
        # "unset": a setting this version of fosp no longer has, missing from newer configs.
        label = ", ".join([method] + [f"{k.removeprefix('fosp.')}="
                                      f"{'unset' if settings.get(k) is None else settings[k]}"
                                      for k in varying])
        group = groups.setdefault((report["task"], label),
                                  Group(report["task"], label, report["pex"], settings))
        if report["seed"] in group.seeds:
            raise ValueError(f"two runs of {report['task']} / {label} with seed "
                             f"{report['seed']}: give each run once")
        group.seeds.append(report["seed"])
        for row in ROWS:
            r = report[row]
            n = int(r["episodes"])
            counts = [round(r["success_rate"] * n), round(r["violation_rate"] * n), n]
            group.counts[row] = [a + b for a, b in zip(group.counts.get(row, [0, 0, 0]),
                                                       counts)]
        group.during_violating.append(round(report["during"]["violation_rate"]
                                            * report["during"]["episodes"]))
        group.cost_regret.append(jsonfile.number(report["during"].get("cost_regret")))
        group.episodes.append(episodes)
        group.control.append(report.get("offline_control"))
    return sorted(groups.values(), key=lambda g: (g.task, g.pex, g.label))


def _method(report: dict) -> str:
    method = "PEX" if report["pex"] else "direct"
    return method if report.get("algo", "fosp") == "fosp" else f"{method} ({report['algo']})"


def closest_direct(group: Group, groups: list[Group]) -> Group | None:
    """The direct fine-tuning group of the same task whose settings differ from ``group``'s in
    the fewest keys (the first such), or None without one."""
    direct = [g for g in groups if not g.pex and g.task == group.task]

    def differences(other: Group) -> int:
        keys = set(group.settings) | set(other.settings)
        return sum(group.settings.get(k) != other.settings.get(k) for k in keys)

    return min(direct, key=differences, default=None)


def paired_violations(a: Group, b: Group) -> tuple[int, int, int, int]:
    """Over the fine-tuning trajectories of ``a`` and ``b`` with the same run seed and episode
    seed (the same layout): (a alone violated, b alone, both, pairs)."""
    only_a = only_b = both = pairs = 0
    for seed in set(a.seeds) & set(b.seeds):
        ea, eb = a.episodes[a.seeds.index(seed)], b.episodes[b.seeds.index(seed)]
        for episode in ea.keys() & eb.keys():
            va, vb = ea[episode], eb[episode]
            only_a += va and not vb
            only_b += vb and not va
            both += va and vb
            pairs += 1
    return only_a, only_b, both, pairs


def format_comparison(groups: list[Group]) -> str:
    """A table per task (pooled before / during / after) and each variant against the closest
    direct fine-tuning."""
    lines = []
    width = max(len("method"), *(len(g.label) for g in groups))
    for task in dict.fromkeys(g.task for g in groups):
        rows = [g for g in groups if g.task == task]
        lines += [task, f"  {'method':<{width}} {'seeds':<9} {'before':>9} {'during':>9} "
                        f"{'after':>9}  violating while fine-tuning (per seed)"]
        for g in rows:
            cells = [f"{g.rate(r, 'success')[0]:.0%}/{g.rate(r, 'violation')[0]:.0%}"
                     for r in ROWS]
            _, v, n = g.counts["during"]
            per_seed = ", ".join(str(k) for k in g.during_violating)
            lines.append(f"  {g.label:<{width}} {','.join(map(str, g.seeds)):<9} "
                         f"{cells[0]:>9} {cells[1]:>9} {cells[2]:>9}  "
                         f"{v}/{n} ({per_seed}), cost regret {np.nanmean(g.cost_regret):.3f}")
        for g in rows:
            if g.control and all(g.control):
                total = {k: sum(c[k] for c in g.control) for k in g.control[0]}
                lines.append(f"  {g.label}: the offline policy alone violated on "
                             f"{total['violating']} of the same {total['trajectories']} "
                             f"layouts; fine-tuning added {total['added']}, avoided "
                             f"{total['avoided']}")
        for g in rows:
            d = closest_direct(g, groups) if g.pex else None
            if d is None:
                continue
            shared = sorted(set(g.seeds) & set(d.seeds))
            _, v_a, n_a = g.counts["during"]
            _, v_b, n_b = d.counts["during"]
            low, high = difference_interval(v_a, n_a, v_b, n_b)
            fewer = sum(g.during_violating[g.seeds.index(s)]
                        < d.during_violating[d.seeds.index(s)] for s in shared)
            # The paper's own measure of safety while learning (App. D.2), seed by seed.
            lower = sum(g.cost_regret[g.seeds.index(s)] < d.cost_regret[d.seeds.index(s)]
                        for s in shared)
            lines.append(f"  {g.label}  against  {d.label}: violating while fine-tuning "
                         f"{v_a / n_a - v_b / n_b:+.1%} (95% CI {low:+.1%} to {high:+.1%}), "
                         f"fewer in {fewer} of {len(shared)} shared seeds; cost regret "
                         f"{np.nanmean(g.cost_regret):.3f} against "
                         f"{np.nanmean(d.cost_regret):.3f}, lower in {lower} of {len(shared)}")
            only_g, only_d, both, pairs = paired_violations(g, d)
            if pairs:
                lines.append(f"    paired by layout ({pairs} trajectories): {g.label} alone "
                             f"violated in {only_g}, {d.label} alone in {only_d}, both in "
                             f"{both} (exact sign test p = {sign_test(only_g, only_d):.2f})")
        lines.append("")
    lines.append("rates are success/violating over all the runs' episodes; before and after "
                 "are evaluation episodes, during the fine-tuning trajectories")
    return "\n".join(lines)


def plot_comparison(groups: list[Group], path: str | os.PathLike) -> None:
    """Pooled rates with 95% intervals: violating while fine-tuning, success and violating
    after, one cluster of bars per task."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    tasks = list(dict.fromkeys(g.task for g in groups))
    labels = list(dict.fromkeys(g.label for g in groups))
    panels = (("during", "violation", "violating while fine-tuning"),
              ("after", "success", "success after"), ("after", "violation", "violating after"))
    fig = Figure(figsize=(4 * len(panels), 3.6))
    width = 0.8 / len(labels)
    colours = matplotlib.colormaps["tab10"]
    named: set[str] = set()  # one legend entry per method, from whichever bar comes first
    for k, (row, name, title) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), k + 1)
        for j, label in enumerate(labels):
            for i, task in enumerate(tasks):
                g = next((g for g in groups if g.task == task and g.label == label), None)
                if g is None:
                    continue
                rate, low, high = g.rate(row, name)
                ax.bar(i + (j - (len(labels) - 1) / 2) * width, rate, width,
                       yerr=[[rate - low], [high - rate]], capsize=3, color=colours(j),
                       label=None if label in named else label)
                named.add(label)
        ax.set_xticks(range(len(tasks)), [t.removeprefix("safereach-") for t in tasks],
                      fontsize=8)
        ax.set(ylim=(0, 1.05), title=title)
    handles, names = [], []
    for ax in fig.axes:
        h, n = ax.get_legend_handles_labels()
        handles, names = handles + h, names + n
    fig.legend(handles, names, loc="lower center", ncol=min(3, len(names)), fontsize=7)
    fig.tight_layout(rect=(0, 0.12, 1, 1))
    path = Path(path)
    save_figure(fig, path, dpi=90)
