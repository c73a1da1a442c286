"""Reading the project's files: YAML configs and tensor checkpoints.

Each reader turns every way a file can be bad (missing, truncated, not YAML, a pickle that
would run code) into a ``UserError`` that names the file, so no caller meets a parser's or
torch's traceback.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from fosp_core.errors import UserError


def read_yaml(path: str | os.PathLike) -> Any:
    """The YAML document in ``path`` (None for an empty file)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: cannot be read ({exc})") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise UserError(f"{path}: not valid YAML{where}: {problem}") from None


def read_mapping(path: str | os.PathLike) -> dict:
    """A YAML file that must hold a mapping (an empty file is an empty one)."""
    data = read_yaml(path)
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a YAML mapping (key: value lines), got "
                        f"{type(data).__name__}")
    return data


def load_tensors(source: str | os.PathLike | Any, label: str | None = None) -> Any:
    """``torch.load(source, weights_only=True)`` on the CPU: tensors and plain containers
    only. ``source`` is a path or a file object (then ``label`` names it in errors)."""
    import pickle

    import torch

    name = label or str(source)
    if isinstance(source, (str, os.PathLike)) and not Path(source).is_file():
        raise UserError(f"{name}: no such checkpoint file")
    try:
        return torch.load(source, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        # torch's own message suggests weights_only=False, i.e. running the file's code.
        first = str(exc).splitlines()[0][:200]
        raise UserError(f"{name}: refused: it is not a weights-only checkpoint (it would "
                        f"run code when loaded; {first})") from None
    except (RuntimeError, EOFError, OSError, ValueError) as exc:
        first = (str(exc).splitlines() or [type(exc).__name__])[0][:200]
        raise UserError(f"{name}: not a readable checkpoint, truncated or damaged "
                        f"({first})") from None
