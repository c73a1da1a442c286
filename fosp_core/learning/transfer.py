"""``fosp transfer``: the transfer suite and the Table-3 comparison, in one command.

1. **Offline.** Each recipe's offline model (``--model RECIPE=RUN``) on every candidate task,
   ``episodes`` deterministic episodes of its actor alone (``train.evaluate``). A task is
   *hard* when the offline policy of either recipe succeeds in at most 60% or violates in at
   least 30% of them: the rule fixed before running (docs/notebook/2026-12-07-vision-first.md).
2. **Fine-tuning.** For each recipe, task, seed and method, ``finetune`` with the recipe's
   settings: ``pex`` (policy expansion, sec. 4.3) or ``direct`` (the offline actor fine-tuned,
   ablation ii); ``--safedreamer RUN`` adds the SafeDreamer-style agent, fine-tuned directly
   with the paper's plain protocol (sampled actions, no recipe).
3. **The page.** Markdown: the offline figures of every candidate (kept or not), then the
   pooled before / during / after rows with 95% intervals, violating fine-tuning trajectories
   and cost regret, beside the paper's Table 3. It reports every fine-tuning run stored
   under ``out``, so a grid grown by several commands (two seeds on one task, one on the
   others) is one page; the commands that filled ``out`` are kept in ``out/commands.txt``
   and the page lists them.

Every cell is stored under ``out`` as it finishes (``offline/RECIPE/TASK.json``,
``finetune/RECIPE/TASK/METHOD-sSEED/``), so the same command again resumes where a stop left
it; cells run ``workers`` at a time, one torch thread each.
"""

from __future__ import annotations

import json
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

from fosp_core.util import jsonfile
from fosp_core.util.files import write_text

HARD_SUCCESS = 0.60  # a task is hard if the offline success rate is at most this,
HARD_VIOLATION = 0.30  # or its violation rate at least this
OFFLINE_SEED = 1000  # episode seeds of the offline evaluation: 1000, 1001, ...
METHODS = ("pex", "direct")
# The paper's Table 3 (real robot, three unseen tasks, 20 tests each): SR / CV in %.
PAPER_TABLE3 = {"real task 1": ((40, 50), (45, 40), (65, 20)),
                "real task 2": ((30, 50), (35, 45), (60, 30)),
                "real task 3": ((20, 60), (40, 40), (50, 20))}


def _one_thread() -> None:
    import torch

    torch.set_num_threads(1)


def _pool(workers: int) -> ProcessPoolExecutor:
    # spawn: a forked child would inherit torch's OpenMP state from the parent.
    return ProcessPoolExecutor(workers, mp_context=get_context("spawn"), initializer=_one_thread)


def _offline_cell(run: str, task: str, episodes: int, path: str) -> dict:
    from fosp_core.learning.train import evaluate

    result = evaluate(run, task=task, episodes=episodes, seed=OFFLINE_SEED)
    result = {k: result[k] for k in ("episodes", "success_rate", "violation_rate",
                                     "success_ci", "violation_ci", "layouts")}
    jsonfile.write(result, path)
    return result


def offline_suite(models: dict[str, str], tasks: list[str], episodes: int, out: Path,
                  workers: int = 2, log=print) -> dict[str, dict[str, dict]]:
    """recipe -> task -> the offline evaluation (read back where stored)."""
    results: dict[str, dict[str, dict]] = {recipe: {} for recipe in models}
    todo = []
    for recipe, run in models.items():
        for task in tasks:
            path = out / "offline" / recipe / f"{task}.json"
            stored = json.loads(path.read_text()) if path.is_file() else None
            if stored and stored["episodes"] == episodes:
                results[recipe][task] = stored
            else:  # the atomic writer makes the folders
                todo.append((recipe, task, run, str(path)))
    with _pool(workers) as pool:
        futures = {pool.submit(_offline_cell, run, task, episodes, path): (recipe, task)
                   for recipe, task, run, path in todo}
        for future, (recipe, task) in futures.items():
            results[recipe][task] = result = future.result()
            log(f"offline {recipe} on {task}: success {result['success_rate']:.0%}, "
                f"violation {result['violation_rate']:.0%} ({episodes} episodes)")
    return results


def is_hard(results: dict[str, dict[str, dict]], task: str) -> bool:
    """The rule: either recipe's offline policy succeeds in <= 60% or violates in >= 30%."""
    return any(r[task]["success_rate"] <= HARD_SUCCESS or
               r[task]["violation_rate"] >= HARD_VIOLATION for r in results.values())


def _finetune_cell(cell: dict) -> str:
    from fosp_core.learning.finetune_run import finetune

    finetune(progress=False, **cell)
    return cell["out"]


def finetune_cells(models: dict[str, str], recipes: dict, tasks: list[str], seeds: list[int],
                   methods: list[str], out: Path, trajectories: int, grad_steps: int,
                   eval_episodes: int, data: str | None = None,
                   safedreamer: str | None = None) -> list[dict]:
    """The ``finetune`` keyword arguments of every cell of the grid; ``recipes`` holds the
    ``Recipe`` of each model's name."""
    from fosp_core.learning.recipes import with_recipe

    common = dict(trajectories=trajectories, grad_steps=grad_steps, data=data,
                  eval_episodes=eval_episodes)
    cells = []
    for recipe_name, run in models.items():
        recipe = recipes[recipe_name]
        for task in tasks:
            for method in methods:
                for seed in seeds:
                    cells.append(dict(common, run=run, task=task, seed=seed,
                                      pex=method == "pex",
                                      overrides=with_recipe(recipe, "finetune", {}),
                                      deterministic=recipe.deterministic,
                                      out=str(out / "finetune" / recipe_name / task /
                                              f"{method}-s{seed}")))
    if safedreamer:
        cells += [dict(common, run=safedreamer, task=task, seed=seed, pex=False,
                       out=str(out / "finetune" / "safedreamer" / task / f"direct-s{seed}"))
                  for task in tasks for seed in seeds]
    return cells


def finetune_grid(cells: list[dict], workers: int = 2, log=print) -> None:
    todo = [c for c in cells if not (Path(c["out"]) / "report.json").is_file()]
    log(f"fine-tuning: {len(cells) - len(todo)} of {len(cells)} runs stored, "
        f"{len(todo)} to run, {workers} at a time")
    with _pool(workers) as pool:
        for done in pool.map(_finetune_cell, todo):
            log(f"fine-tuned: {done}")


def record_command(out: Path, command: str) -> list[str]:
    """The commands that filled ``out`` (``out/commands.txt``), ``command`` added once."""
    path = out / "commands.txt"
    commands = path.read_text().splitlines() if path.is_file() else []
    if command not in commands:
        commands.append(command)
        write_text(path, "\n".join(commands) + "\n")
    return commands


def stored_runs(out: Path) -> list[str]:
    """Every finished fine-tuning run under ``out`` (``finetune/RECIPE/TASK/METHOD-sSEED``)."""
    return sorted(str(p.parent) for p in (out / "finetune").glob("*/*/*/report.json"))


def _rate(rate: float, ci) -> str:
    return f"{rate:.0%} ({ci[0]:.0%}-{ci[1]:.0%})"


def page(offline: dict[str, dict[str, dict]], runs: list[str], commands: list[str]) -> str:
    """The results page: offline suite, the pooled rows of the fine-tuning ``runs``, the
    paper's Table 3; ``commands`` reproduce it."""
    from fosp_core.learning import finetune_compare as compare

    recipes = list(offline)
    tasks = list(next(iter(offline.values()))) if offline else []
    lines = ["# The transfer suite and the Table-3 comparison", "",
             "Made by `fosp transfer` (fosp_core/learning/transfer.py); it reproduces with:", "",
             "```bash", *commands, "```", "",
             "## Offline: every candidate task", "",
             f"Deterministic episodes of each recipe's offline actor (seeds {OFFLINE_SEED}, "
             f"{OFFLINE_SEED + 1}, ...), success / violating episodes with 95% intervals. "
             f"Hard: either recipe succeeds in <= {HARD_SUCCESS:.0%} or violates in >= "
             f"{HARD_VIOLATION:.0%} of the episodes.", "",
             "| task | " + " | ".join(f"{r}: success | {r}: violating" for r in recipes)
             + " | hard |",
             "|---|" + "---|---|" * len(recipes) + "---|"]
    for task in tasks:
        cols = []
        for recipe in recipes:
            r = offline[recipe][task]
            cols += [_rate(r["success_rate"], r["success_ci"]),
                     _rate(r["violation_rate"], r["violation_ci"])]
        lines.append(f"| `{task}` | " + " | ".join(cols)
                     + f" | {'**yes**' if is_hard(offline, task) else 'no'} |")
    lines += ["", "## Fine-tuning", ""]
    if not runs:
        lines.append("No fine-tuning run has finished yet.")
    else:
        first = compare.load_report(runs[0])[0]
        lines += [f"Before and after: {first['before']['episodes']} evaluation episodes per "
                  f"seed; during: the {first['trajectories']} fine-tuning trajectories per "
                  f"seed ({first['grad_steps']} gradient steps after each). Success / "
                  "violating episodes, pooled over seeds, with 95% intervals.", "",
                  "| recipe | task | method | seeds | before | during | after | "
                  "violating fine-tuning trajectories | cost regret |",
                  "|---|---|---|---|---|---|---|---|---|"]
        by_recipe: dict[str, list] = {}
        for run in runs:  # out/finetune/RECIPE/TASK/METHOD-sSEED
            by_recipe.setdefault(Path(run).parts[-3], []).append(compare.load_report(run))
        for recipe, reports in by_recipe.items():
            for group in compare.pool(reports):
                rows = []
                for row in compare.ROWS:
                    s, v = group.rate(row, "success"), group.rate(row, "violation")
                    rows.append(f"{_rate(s[0], s[1:])} / {_rate(v[0], v[1:])}")
                regret = sum(group.cost_regret) / len(group.cost_regret)
                lines.append(f"| {recipe} | `{group.task}` | {group.label} | "
                             f"{', '.join(map(str, group.seeds))} | " + " | ".join(rows)
                             + f" | {sum(group.during_violating)} of "
                             f"{group.counts['during'][2]} | {regret:.3f} |")
    lines += ["", "## The paper's Table 3 (real robot, 20 tests a row, 40 gradient steps)", "",
              "| task | before | during | after |", "|---|---|---|---|"]
    for task, rows in PAPER_TABLE3.items():
        lines.append(f"| {task} | " + " | ".join(f"{s}% / {v}%" for s, v in rows) + " |")
    return "\n".join(lines) + "\n"
