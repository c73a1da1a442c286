"""The ``fosp`` command line: collect data, train offline, fine-tune safely, run the ROS demo.

Subcommands import their heavy dependencies lazily so ``fosp --help`` stays instant.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

from fosp_core.util import jsonfile
from fosp_core.util.errors import UserError


def count(minimum: int):
    """An argparse type: an integer of at least ``minimum`` (a bad one is a usage error)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{value} is less than {minimum}")
        return value

    parse.__name__ = f"integer >= {minimum}"
    return parse


def _collect(args: argparse.Namespace) -> int:
    from fosp_core.data.collect import collect, collected, collection_plan
    from fosp_core.data.dataset import load_dataset, summarize, trajectory_files

    out = Path(args.out)
    plan = collection_plan(args.task, args.episodes, args.seed, args.mix, args.behaviour,
                           args.cover_layouts)
    if out.is_dir():
        done, _ = collected(out, plan)
        if done:
            print(f"{args.out} holds {len(done)} of these {args.episodes} episodes already: "
                  f"collecting the {args.episodes - len(done)} missing")
    try:
        added = collect(args.out, args.task, args.episodes, seed=args.seed, mix=args.mix,
                        behaviour=args.behaviour, workers=args.workers,
                        cover_layouts=args.cover_layouts, add=args.add)
    except KeyboardInterrupt:
        from fosp_core.learning.train import Interrupted

        done, _ = collected(out, plan)
        raise Interrupted(f"stopped: {len(done)} of {args.episodes} episodes are in "
                          f"{args.out}, each file whole; the same command again collects "
                          "the missing ones") from None
    summary = summarize(load_dataset(args.out))
    total = len(trajectory_files(out))
    print(f"wrote {added} {'trajectory' if added == 1 else 'trajectories'} to {args.out}, "
          f"{total} in all: success {summary['success_rate']:.0%}, "
          f"violation {summary['violation_rate']:.0%}, outcomes {summary['outcomes']}")
    return 0


def _dataset_info(args: argparse.Namespace) -> int:
    from fosp_core.data.dataset import (
        format_summary,
        load_dataset,
        plot_paths,
        plot_returns,
        summarize,
    )

    dataset = load_dataset(args.dir)
    if not dataset.trajectories and not dataset.errors:
        # A wrong path should not read as an empty dataset of zeros.
        raise ValueError(f"{args.dir}: no traj_*.npz files (is it a `fosp collect --out` "
                         "or recorder directory?)")
    summary = summarize(dataset)
    for path, plot in ((args.plot, plot_returns), (args.paths, plot_paths)):
        if path:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            plot(dataset, path)
    if args.json:
        summary = dict(summary, errors=[[str(p), msg] for p, msg in dataset.errors])
        print(jsonfile.dumps(summary, indent=2))
    else:
        print(f"dataset {args.dir}")
        print(format_summary(summary, dataset.errors))
        for path in (args.plot, args.paths):
            if path:
                print(f"plot: {path}")
    return 0


def _dataset_from_bag(args: argparse.Namespace) -> int:
    from fosp_core.data.bag import bag_to_dataset

    paths = bag_to_dataset(
        args.bag, args.out, task=args.task, image_topic=args.image_topic,
        pose_topic=args.pose_topic, action_topic=args.action_topic,
        reward_topic=args.reward_topic, cost_topic=args.cost_topic,
        episode_topic=args.episode_topic, labels_topic=args.labels_topic, rate_hz=args.rate,
    )
    print(f"wrote {len(paths)} trajectories from {args.bag} to {args.out}")
    return 0


def _tasks(args: argparse.Namespace) -> int:
    from fosp_core.envs.contact_sheet import write_contact_sheet

    path = write_contact_sheet(args.sheet, seed=args.seed)
    print(f"wrote {path}")
    return 0


def _check_device(args: argparse.Namespace) -> None:
    """--device auto | cpu | cuda[:N] -> the device torch will use (auto: a GPU if any)."""
    from fosp_core.agent.precision import resolve_device

    args.device = str(resolve_device(args.device))


def pretrain_config(args: argparse.Namespace, base=None):
    """The agent config a ``fosp pretrain`` command line trains with: ``--preset`` (``base``
    instead when given and --preset is the default), the --recipe's pretraining settings,
    then --obs, --algo, --seed and the --set overrides."""
    from fosp_core.agent.config import config_by_name
    from fosp_core.learning.recipes import load_recipe, with_recipe
    from fosp_core.util.config import dotted_overrides, merge

    overrides = {"obs_mode": args.obs, "algo": args.algo, "seed": args.seed}
    explicit = base is None or args.preset is not None
    start = config_by_name(args.preset or "cpu") if explicit else base
    recipe = load_recipe(args.recipe) if args.recipe else None
    config = merge(start, with_recipe(recipe, "pretrain", {}))
    config = merge(config, {k: v for k, v in overrides.items() if v is not None})
    return merge(config, dotted_overrides(args.set))


def _check_resume(args: argparse.Namespace) -> None:
    """``--resume`` continues a run with its saved config: refuse arguments that change it."""
    from fosp_core.learning.runs import load_run_config
    from fosp_core.util.config import differences

    saved = load_run_config(args.out)
    changed = differences(saved, pretrain_config(args, base=saved))
    if changed:
        raise UserError(f"--resume continues {args.out} with its saved config, and the "
                        f"arguments change it ({'; '.join(changed)}); leave them out, or "
                        "train a new --out")


def _pretrain(args: argparse.Namespace) -> int:
    from fosp_core.learning.train import pretrain

    _check_device(args)
    if not Path(args.data).is_dir():
        raise FileNotFoundError(f"{args.data}: dataset directory does not exist")
    if args.resume:
        _check_resume(args)
    config = pretrain_config(args)
    metrics = pretrain(args.data, args.out, config, args.steps, resume=args.resume,
                       device=args.device, seed=args.seed or 0, ckpt_every=args.ckpt_every,
                       keep_every=args.keep_every, skip_bad=args.skip_bad)
    shown = ("model/loss", "ac/actor_loss", "ac/ref_mean", "ac/lagrange")
    summary = ", ".join(f"{k} {metrics[k]:.4g}" for k in shown if k in metrics)
    print(f"run {args.out}: {args.steps} steps" + (f"; last step: {summary}" if summary else ""))
    return 0


def _eval(args: argparse.Namespace) -> int:
    from fosp_core.learning.finetune_run import LEAD_IN_ACTIONS, evaluate_finetuned
    from fosp_core.learning.runs import is_finetuned
    from fosp_core.learning.train import evaluate

    _check_device(args)
    if args.each_layout and args.episodes is not None:
        raise ValueError("--each-layout runs one episode per distinct layout; leave out "
                         "--episodes")
    episodes = 10 if args.episodes is None else args.episodes
    if is_finetuned(args.run):
        if args.step is not None:
            raise ValueError("--step picks weights kept in pretraining; a fine-tuned run "
                             "keeps rounds (--round)")
        result = evaluate_finetuned(args.run, args.task, episodes, seed=args.seed,
                                    device=args.device, progress=True, round_=args.round,
                                    each_layout=args.each_layout)
    elif args.round is not None:
        raise ValueError(f"--round needs a fine-tuned run; {args.run} is a pretrained one")
    else:
        result = evaluate(args.run, task=args.task, episodes=episodes, seed=args.seed,
                          device=args.device, step=args.step, progress=True,
                          each_layout=args.each_layout)
    if args.json:
        print(jsonfile.dumps(result))
        return 0
    s_low, s_high = result["success_ci"]
    v_low, v_high = result["violation_ci"]
    what = ("each of its distinct layouts once" if args.each_layout else
            f"{result['episodes']} episodes ({result['layouts']} distinct layouts)")
    print(f"{args.run} on {args.task}, {what}: "
          f"success {result['success_rate']:.0%} (95% CI {s_low:.0%}-{s_high:.0%}), "
          f"violation {result['violation_rate']:.0%} (95% CI {v_low:.0%}-{v_high:.0%}), "
          f"reward return {result['reward_return']:.2f}, "
          f"cost return {result['cost_return']:.2f}")
    if result.get("expansion"):
        lead_in = result["lead_in_offline_share"]
        print(f"  eq. 21 chose the online policy for {result['online_share']:.0%} of all "
              "actions" + ("" if math.isnan(lead_in) else
                           f"; the offline one for {lead_in:.0%} of the actions leading into "
                           f"the violations ({LEAD_IN_ACTIONS} up to each first cost)"))
    for row in result.get("per_layout", []):
        if row["violation"] or not row["success"]:
            print(f"  target {row['target_index']}, obstacles {row['obstacle_indices']}: "
                  + ", ".join(filter(None, [
                      f"first cost at action {row['first_cost']}" if row["violation"] else "",
                      "" if row["success"] else "target not reached"])))
    return 0


def finetune_settings(args: argparse.Namespace) -> tuple[dict, bool, bool]:
    """Config overrides, policy expansion and deterministic acting of a fine-tuning command:
    the recipe's (--recipe, else the run's own), then the command line's."""
    from fosp_core.learning.recipes import recipe_of_run, with_recipe
    from fosp_core.util.config import dotted_overrides

    recipe = recipe_of_run(args.recipe, args.run)
    overrides = with_recipe(recipe, "finetune", dotted_overrides(getattr(args, "set", [])))
    pex = not getattr(args, "no_pex", False) and (recipe is None or recipe.pex)
    deterministic = args.deterministic
    if deterministic is None:
        deterministic = recipe is not None and recipe.deterministic
    return overrides, pex, deterministic


def _finetune(args: argparse.Namespace) -> int:
    from fosp_core.learning.finetune_run import finetune, format_report

    _check_device(args)
    overrides, pex, deterministic = finetune_settings(args)
    report = finetune(args.run, args.task, args.trajectories, args.grad_steps, args.out,
                      data=args.data, pex=pex, eval_episodes=args.eval_episodes,
                      seed=args.seed, device=args.device, overrides=overrides,
                      deterministic=deterministic, resume=args.resume,
                      keep_every=args.keep_every, skip_bad=args.skip_bad)
    print(format_report(report))
    print(f"report: {args.out}/report.json, plot: {args.out}/finetune.png")
    return 0


def _compare(args: argparse.Namespace) -> int:
    from fosp_core.learning import finetune_compare as compare

    groups = compare.pool([compare.load_report(path) for path in args.runs])
    print(compare.format_comparison(groups))
    if args.plot:
        compare.plot_comparison(groups, args.plot)
        print(f"plot: {args.plot}")
    return 0


def _transfer(args: argparse.Namespace) -> int:
    import shlex

    from fosp_core.envs.tasks import TASKS
    from fosp_core.learning import transfer
    from fosp_core.learning.recipes import load_recipe
    from fosp_core.util.files import write_text

    models, recipes = {}, {}
    for item in args.model:
        name, sep, run = item.partition("=")
        if not sep or not Path(run).is_dir():
            raise UserError(f"--model {item}: expected RECIPE=RUN with RUN a run directory")
        recipe = load_recipe(name)
        models[recipe.name], recipes[recipe.name] = run, recipe
    named = [] if args.tasks in (["all"], ["hard"]) else args.tasks
    unknown = [t for t in named if t not in TASKS]
    if unknown:
        raise UserError(f"--tasks: unknown {', '.join(unknown)}; choose from {', '.join(TASKS)}")
    out = Path(args.out)
    offline = transfer.offline_suite(models, list(TASKS), args.episodes, out, args.workers)
    hard = [t for t in TASKS if transfer.is_hard(offline, t)]
    print(f"hard suite ({len(hard)} of {len(TASKS)}): {', '.join(hard) or 'none'}")
    tuned = named or (hard if args.tasks == ["hard"] else list(TASKS))
    cells = [] if args.offline_only else transfer.finetune_cells(
        models, recipes, tuned, args.seeds, args.methods, out, args.trajectories, args.grad_steps,
        args.eval_episodes, args.data, args.safedreamer)
    transfer.finetune_grid(cells, args.workers)
    commands = transfer.record_command(out, "fosp " + " ".join(map(shlex.quote, args.argv)))
    path = write_text(Path(args.page or out / "transfer.md"),
                      transfer.page(offline, transfer.stored_runs(out), commands))
    print(f"page: {path}")
    return 0


def _extract(args: argparse.Namespace) -> int:
    from fosp_core.learning.extract import extract_policy
    from fosp_core.learning.recipes import extract_settings
    from fosp_core.util.config import dotted_overrides

    _check_device(args)
    args.weights, args.updates, overrides = extract_settings(
        args.recipe, args.run, args.weights, args.updates, dotted_overrides(args.set))
    info = extract_policy(args.run, args.out, args.updates, data=args.data, seed=args.seed,
                          step=args.step, device=args.device, weights=args.weights,
                          overrides=overrides, skip_bad=args.skip_bad)
    fitted_on = (f"{info['rows']} dataset transitions" if args.weights == "eq19" else
                 f"the {info['rows_weighted']} of {info['rows']} dataset transitions from "
                 "demonstrations that reached the target without a cost")
    print(f"run {args.out}: the critics of {args.run} (step {info['step']}) with a fresh actor "
          f"fitted for {args.updates} updates on {fitted_on} "
          f"(eq. 19 weights: mean {info['weight_mean']:.3g}, max {info['weight_max']:.3g})")
    print("eq. 19 weight per transition relative to the mean (1 = behaviour cloning):")
    for outcome, group in info["by_outcome"].items():
        print(f"  {outcome:<15} {group['relative_weight']:6.2f}  "
              f"({group['transitions']} transitions)")
    return 0


def _demo(args: argparse.Namespace) -> int:
    # Through the ROS graph: fosp_ros does the talking; fosp_core never imports rclpy.
    from fosp_core.learning.finetune_run import format_report
    from fosp_ros.demo import run_demo

    _, pex, deterministic = finetune_settings(args)
    report = run_demo(args.run, args.task, args.trajectories, args.grad_steps, args.out,
                      eval_episodes=args.eval_episodes, seed=args.seed, config=args.config,
                      data=args.data, deterministic=deterministic, recipe=args.recipe, pex=pex)
    print(format_report(report))
    print(f"report: {args.out}/report.json, plot: {args.out}/finetune.png, "
          f"graph log: {args.out}/graph.log")
    return 0


def _export(args: argparse.Namespace) -> int:
    from fosp_core.learning.runs import CHECKPOINT_NAME, export_run

    source = {"commands": args.command} if args.command else {}
    out = export_run(args.run, args.out, half=not args.float32, **source)
    size = (out / CHECKPOINT_NAME).stat().st_size / 1e6
    print(f"exported {args.run} to {out} ({size:.1f} MB of weights)")
    return 0


def _bench(args: argparse.Namespace) -> int:
    import os
    import platform

    from fosp_core.bench import format_results, run_all

    quiet = (lambda *_: None) if args.json else (lambda text: print(text, file=sys.stderr))
    if args.against:
        from fosp_core.bench import compare_with, format_comparison

        result = compare_with(args.against, rounds=args.rounds, progress=quiet)
        print(jsonfile.dumps(result) if args.json else format_comparison(result))
        return 0
    results = run_all(grad_steps=args.grad_steps, progress=quiet)
    results["machine"] = f"{platform.machine()}, {os.cpu_count()} cores"
    if args.json:
        print(jsonfile.dumps(results))
    else:
        print(f"machine: {results['machine']}, torch threads {results['torch_threads']}")
        print(format_results(results))
    return 0


def _bringup(args: argparse.Namespace) -> int:
    # The ROS side lives in fosp_ros; fosp_core itself never imports rclpy.
    from fosp_ros.bringup import run

    return run(args)


def _add_finetune_arguments(p: argparse.ArgumentParser, tasks, trajectories: int,
                            eval_episodes: int) -> None:
    """Options shared by ``fosp finetune`` (in-process) and ``fosp demo`` (through ROS)."""
    p.add_argument("--run", required=True, help="pretrained run directory")
    p.add_argument("--task", default="safereach-obstacle-shape", choices=sorted(tasks))
    p.add_argument("--trajectories", type=count(1), default=trajectories,
                   help="fine-tuning trajectories")
    p.add_argument("--grad-steps", type=count(0), default=40,
                   help="gradient steps per trajectory")
    p.add_argument("--eval-episodes", type=count(1), default=eval_episodes)
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--deterministic", action=argparse.BooleanOptionalAction,
                   help="fine-tuning trajectories take each policy's most likely action and "
                        "eq. 21's most likely choice, or (--no-deterministic) sample them as "
                        "the paper does (default: the recipe's; without one, sample)")
    add_recipe(p, "fine-tuning (default: the run's own recipe)")


def add_recipe(p: argparse.ArgumentParser, what: str) -> None:
    from fosp_core.learning.recipes import recipe_names

    p.add_argument("--recipe", metavar="NAME", help=f"a recipe of config/recipes "
                   f"({', '.join(recipe_names())}) or a recipe YAML file: its settings of {what}")


def add_command(sub, name: str, **kwargs) -> argparse.ArgumentParser:
    """A subcommand whose help shows every option's default."""
    return sub.add_parser(name, formatter_class=argparse.ArgumentDefaultsHelpFormatter,
                          **kwargs)


def add_device(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="auto",
                   help="auto (a GPU if torch sees one), cpu, cuda or cuda:N")


def add_skip_bad(p: argparse.ArgumentParser) -> None:
    p.add_argument("--skip-bad", action="store_true",
                   help="train without the dataset's unreadable trajectory files (by default "
                        "one stops the command, naming it)")


def build_parser() -> argparse.ArgumentParser:
    from fosp_core.envs.tasks import TASKS

    parser = argparse.ArgumentParser(prog="fosp", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    from fosp_core.agent.config import ALGOS, OBS_MODES

    p = add_command(sub, "collect", help="collect a SafeReach dataset with scripted behaviours")
    p.add_argument("--task", default="safereach", choices=sorted(TASKS))
    p.add_argument("--episodes", type=count(1), required=True)
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--mix", choices=["real", "sim"],
                        help="real: the paper's 120/30/40/10 composition; sim: safe:unsafe:random")
    source.add_argument("--behaviour", choices=["safe", "unsafe", "random"])
    p.add_argument("--out", required=True,
                   help="dataset directory; the same command again adds what is missing")
    p.add_argument("--add", action="store_true",
                   help="add to a directory that holds other trajectories (another "
                        "collection, recorded demonstrations)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=count(1), default=None,
                   help="processes (default: all cores)")
    p.add_argument("--cover-layouts", action="store_true",
                   help="the safe behaviour's episodes take the task's distinct layouts in "
                        "turn instead of random ones, so every layout gets its share of "
                        "demonstrations (the other behaviours keep random layouts)")
    p.set_defaults(func=_collect)

    p = add_command(sub, "dataset", help="inspect datasets")
    dsub = p.add_subparsers(dest="dataset_command", required=True)
    q = add_command(dsub, "info", help="counts and success/violation rates per behaviour")
    q.add_argument("dir")
    q.add_argument("--json", action="store_true", help="print one JSON object")
    q.add_argument("--plot", metavar="PNG", help="reward return vs cost return per trajectory")
    q.add_argument("--paths", metavar="PNG", help="top view of the gripper paths, coloured by "
                   "outcome, with where each violation began")
    q.set_defaults(func=_dataset_info)
    # Defaults mirror fosp_core.data.bag.BagTopics (not imported here: --help stays instant).
    q = add_command(dsub, "from-bag", help="convert a rosbag2 teleop recording (MCAP or SQLite3)")
    q.add_argument("bag", help="bag directory (a bare .mcap file works too)")
    q.add_argument("--out", required=True, help="dataset directory (adds after what it holds)")
    q.add_argument("--task", default="safereach", help="task name stored in each trajectory")
    q.add_argument("--image-topic", default="/camera/camera/color/image_raw")
    q.add_argument("--pose-topic", default="/franka_robot_state_broadcaster/current_pose")
    q.add_argument("--action-topic", default="/fosp/action")
    q.add_argument("--reward-topic", default="", help="std_msgs/Float32 reward, if recorded")
    q.add_argument("--cost-topic", default="", help="std_msgs/Float32 cost, if recorded")
    q.add_argument("--episode-topic", default="/fosp/episode",
                   help="start/stop markers; '' makes the whole bag one episode")
    q.add_argument("--labels-topic", default="/fosp/labels",
                   help="Float32MultiArray [reward, cost] from the fosp_ros labeler; "
                        "'' to use --reward-topic and --cost-topic instead")
    q.add_argument("--rate", type=float, default=10.0, metavar="HZ", help="control rate")
    q.set_defaults(func=_dataset_from_bag)

    p = add_command(sub, "tasks", help="contact sheet of the four SafeReach tasks")
    p.add_argument("--sheet", default="fosp-tasks.png", metavar="PNG",
                   help="where to write it (default: fosp-tasks.png here)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_tasks)

    p = add_command(sub, "pretrain", help="offline training of the agent on a dataset")
    p.add_argument("--data", required=True, help="dataset directory")
    p.add_argument("--preset",
                   help="the agent's settings: a preset (cpu, paper) or a YAML file of the "
                        "settings that differ from the preset it names (preset: NAME; "
                        "without it, cpu); default: cpu, or with --resume the run's own")
    p.add_argument("--obs", choices=OBS_MODES, help="observation mode (default: the config's)")
    p.add_argument("--algo", choices=ALGOS, help="algorithm (default: the config's)")
    p.add_argument("--steps", type=count(1), required=True, help="total training steps")
    p.add_argument("--out", required=True, help="run directory")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --out with its saved config (--steps may grow)")
    add_recipe(p, "pretraining (recorded in the run for extract and finetune)")
    add_device(p)
    p.add_argument("--seed", type=int, help="random seed (default 0)")
    p.add_argument("--ckpt-every", type=count(1), default=1000, metavar="K")
    p.add_argument("--keep-every", type=count(0), default=0, metavar="K",
                   help="also keep the weights of every K-th step in RUN/checkpoints/, "
                        "for fosp eval --step (default: only the latest checkpoint)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="config override, e.g. --set actor_critic.awr_normalise=false "
                        "(repeatable; applied last)")
    add_skip_bad(p)
    p.set_defaults(func=_pretrain)

    p = add_command(sub, "extract", help="fit a fresh actor to a trained run's frozen critics "
                       "(policy extraction, eq. 19-20)")
    p.add_argument("--run", required=True, help="trained FOSP run directory")
    p.add_argument("--out", required=True, help="run directory to write")
    p.add_argument("--updates", type=count(1),
                   help="actor updates (default: the recipe's; without one, 4000)")
    p.add_argument("--data", help="offline dataset (default: the one the run was trained on)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--step", type=int, help="the critics kept at this step "
                   "(pretrain --keep-every) instead of the latest checkpoint")
    p.add_argument("--weights",  # checked by extract_policy (torch-free here)
                   help="eq19: the paper's weights; safe-success: clone only the "
                        "demonstrations that reached the target without a cost (default: the "
                        "recipe's; without one, eq19)")
    add_recipe(p, "the extraction (default: the pretrained run's own recipe)")
    add_device(p)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="config override for the extraction, e.g. "
                        "--set actor_critic.awr_beta_cost=20 (repeatable; not the world "
                        "model's or critics' sizes)")
    add_skip_bad(p)
    p.set_defaults(func=_extract)

    p = add_command(sub, "eval", help="evaluate a trained run in the simulated SafeReach")
    p.add_argument("--run", required=True,
                   help="run directory; or a fine-tuned one (fosp finetune's --out, the ROS "
                        "learner's RUN/online): its policy with expansion, on the layouts of "
                        "the report's 'after' row (seed offset 100000)")
    p.add_argument("--task", default="safereach", choices=sorted(TASKS))
    p.add_argument("--episodes", type=count(1), help="episodes, on the layouts seeds seed, "
                   "seed + 1, ... draw (default 10)")
    p.add_argument("--each-layout", action="store_true",
                   help="instead, one episode on each distinct layout of the task (27-33), "
                        "and list those that violated or missed the target")
    p.add_argument("--seed", type=int, default=0)
    add_device(p)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--step", type=int, help="evaluate the weights kept at this step "
                   "(pretrain --keep-every) instead of the latest checkpoint")
    p.add_argument("--round", type=int, help="a fine-tuned run: the weights kept after this "
                   "round (finetune --keep-every) instead of the latest")
    p.set_defaults(func=_eval)

    p = add_command(sub, "finetune", help="safe fine-tuning in the simulated twin (PEX)")
    _add_finetune_arguments(p, TASKS, trajectories=40, eval_episodes=20)
    p.add_argument("--data", help="offline dataset (default: the one the run was trained on)")
    p.add_argument("--no-pex", action="store_true",
                   help="ablation (ii): fine-tune the offline policy directly")
    p.add_argument("--resume", action="store_true",
                   help="continue a stopped run in --out, with the same arguments "
                        "(--trajectories may grow); it is saved after every round")
    p.add_argument("--keep-every", type=count(0), default=0, metavar="K",
                   help="also keep the acting weights after every K-th round in OUT/rounds/, "
                        "for fosp eval --run OUT --round N")
    add_device(p)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override the run's config for fine-tuning, e.g. "
                        "--set fosp.online_actor_init=copy (repeatable; not the network sizes)")
    add_skip_bad(p)
    p.set_defaults(func=_finetune)

    p = add_command(sub, "compare", help="pool fine-tuning reports over seeds: PEX against "
                                       "direct fine-tuning, by task")
    p.add_argument("runs", nargs="+", metavar="OUT",
                   help="`fosp finetune` / `fosp demo` output dirs (or their report.json)")
    p.add_argument("--plot", metavar="PNG", help="also draw the pooled rates here")
    p.set_defaults(func=_compare)

    p = add_command(sub, "transfer", help="the transfer suite and the Table-3 comparison over "
                       "recipes, tasks and seeds, as a results page")
    p.add_argument("--model", action="append", required=True, metavar="RECIPE=RUN",
                   help="a recipe's offline model, e.g. paper=models/fosp-safereach-image-paper "
                        "(repeatable)")
    p.add_argument("--tasks", nargs="+", default=["hard"], metavar="TASK",
                   help="tasks to fine-tune on: names, 'all', or 'hard' (those the offline "
                        "evaluation finds hard); the offline evaluation covers every task")
    p.add_argument("--seeds", nargs="+", type=int, default=[0])
    p.add_argument("--methods", nargs="+", choices=("pex", "direct"), default=["pex", "direct"])
    p.add_argument("--safedreamer", metavar="RUN",
                   help="also fine-tune this SafeDreamer-style run (--algo safedreamer)")
    p.add_argument("--episodes", type=count(1), default=100, help="offline episodes per task")
    p.add_argument("--trajectories", type=count(1), default=20)
    p.add_argument("--grad-steps", type=count(0), default=40)
    p.add_argument("--eval-episodes", type=count(1), default=20)
    p.add_argument("--data", help="offline dataset (default: the one each run was trained on)")
    p.add_argument("--offline-only", action="store_true", help="stop after the offline suite")
    p.add_argument("--workers", type=count(1), default=2, help="runs at a time")
    p.add_argument("--out", required=True, help="directory of the runs (resumable)")
    p.add_argument("--page", help="markdown page to write (default: OUT/transfer.md)")
    p.set_defaults(func=_transfer)

    p = add_command(sub, "demo", help="safe fine-tuning of a pretrained run through the ROS graph")
    _add_finetune_arguments(p, TASKS, trajectories=5, eval_episodes=10)
    p.add_argument("--config", default="", help="project YAML for the graph")
    p.add_argument("--data", help="offline dataset (default: the one the run was trained on)")
    p.set_defaults(func=_demo)

    p = add_command(sub, "bringup", help="run a ROS graph (safereach, collect) in one process")
    from fosp_ros.bringup import add_arguments

    add_arguments(p)
    p.set_defaults(func=_bringup)

    p = add_command(sub, "export", help="a run's config and float16 weights, small enough to ship")
    p.add_argument("--run", required=True, help="trained run directory")
    p.add_argument("--out", required=True, help="directory to write (e.g. models/NAME)")
    p.add_argument("--command", action="append", default=[],
                   help="a command that trained the run, recorded in source.json for "
                        "`make demo RETRAIN=1` (repeatable, in the order they ran)")
    p.add_argument("--float32", action="store_true", help="keep float32 weights")
    p.set_defaults(func=_export)

    p = add_command(sub, "bench", help="latency, training and simulator figures of this machine")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--grad-steps", type=count(1), default=40,
                   help="steps of the fine-tuning round")
    p.add_argument("--against", metavar="REV",
                   help="instead: train and policy step of this tree against git revision "
                        "REV (e.g. HEAD~1), measured in alternating rounds, with ratios")
    p.add_argument("--rounds", type=count(1), default=3, help="rounds of --against")
    p.set_defaults(func=_bench)

    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    args.argv = argv  # as given, for pages that say how they were made
    try:
        return args.func(args)
    except KeyboardInterrupt:  # a second Ctrl-C, or one where nothing catches the first
        print("fosp: interrupted", file=sys.stderr)
        return 130
    except (ValueError, FileNotFoundError) as err:
        print(f"fosp: error: {err}", file=sys.stderr)
        return 2
    except Exception as err:  # dataset errors name the file; show them without a traceback
        from fosp_core.data.dataset import DatasetError
        from fosp_core.learning.train import Interrupted

        if isinstance(err, DatasetError):
            print(f"fosp: error: {err}", file=sys.stderr)
            return 2
        if isinstance(err, Interrupted):
            print(f"fosp: {err}", file=sys.stderr)
            return 130  # as a shell reports a job stopped by SIGINT
        raise


if __name__ == "__main__":
    sys.exit(main())
