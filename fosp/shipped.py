"""The checkpoints shipped in ``models/``: the commands that made them, and rerunning them.

A shipped model records in ``source.json`` the ``fosp`` commands that trained it, in order:
``fosp pretrain``, then possibly ``fosp extract`` (a fresh actor fitted to the pretrained
critics). ``make demo RETRAIN=1`` reruns them on the demo's dataset::

    python -m fosp.shipped MODEL                 # print the commands
    python -m fosp.shipped MODEL --rerun DATA OUT

Rerunning keeps every option and redirects the paths: each ``--data`` reads DATA, each later
command's ``--run`` reads what the one before it wrote, and the last command writes OUT (the
ones before it write ``OUT-1``, ``OUT-2``, ...).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
from pathlib import Path

from fosp_core.learning.runs import SOURCE_NAME


def recorded_commands(model_dir: str | os.PathLike) -> list[list[str]]:
    """The commands in ``model_dir/source.json``, each split into its arguments."""
    source = json.loads((Path(model_dir) / SOURCE_NAME).read_text())
    commands = source.get("commands") or [source["command"]]
    return [shlex.split(command) for command in commands]


def _redirect(argv: list[str], flag: str, value: str) -> None:
    if flag not in argv:
        raise ValueError(f"{shlex.join(argv)}: no {flag} to redirect")
    argv[argv.index(flag) + 1] = value


def rerun_commands(commands: list[list[str]], data: str, out: str) -> list[list[str]]:
    """``commands`` with their paths redirected as the module docstring says."""
    result, previous = [], None
    for k, argv in enumerate(commands):
        argv = list(argv)
        target = out if k == len(commands) - 1 else f"{out}-{k + 1}"
        if "--data" in argv or k == 0:
            _redirect(argv, "--data", data)
        if k > 0:
            _redirect(argv, "--run", previous)
        _redirect(argv, "--out", target)
        result.append(argv)
        previous = target
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fosp.shipped", description=__doc__)
    parser.add_argument("model", help="a directory in models/")
    parser.add_argument("--rerun", nargs=2, metavar=("DATA", "OUT"),
                        help="run the commands again on DATA, writing the final run to OUT")
    args = parser.parse_args(argv)
    commands = recorded_commands(args.model)
    if not args.rerun:
        for command in commands:
            print("  " + shlex.join(command))
        return 0
    from fosp.cli import main as fosp

    for command in rerun_commands(commands, *args.rerun):
        print(f"RETRAIN: {shlex.join(command)}", flush=True)
        if command[0] != "fosp":
            raise ValueError(f"not a fosp command: {shlex.join(command)}")
        code = fosp(command[1:])
        if code:
            return code
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
