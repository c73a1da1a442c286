"""The project's files, read and written safely: YAML configs, tensor checkpoints, figures.

Writing: ``atomic_write`` is the one way a file is written (temp file in the same directory,
fsync, ``os.replace``): a crash leaves the old file or the new one, never half of one.
Reading: each reader turns every way a file can be bad (missing, truncated, not YAML, a
pickle that would run code) into a ``UserError`` that names the file, so no caller meets a
parser's or torch's traceback.
"""

from __future__ import annotations

import os
import secrets
import sys
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import yaml

from fosp_core.util.errors import UserError


def _fsync_dir(directory: Path) -> None:
    # Makes the rename itself durable. Not every OS / filesystem lets a directory be opened
    # or fsynced (Windows, some network mounts); the data file is already synced, so skip.
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], None]) -> Path:
    """Write ``path`` with ``write(binary file)`` via a synced temp file and ``os.replace``.

    The temp name starts with a dot and ends in ``.tmp``, so a crash mid-write never leaves
    something that matches ``traj_*.npz`` or looks like a finished file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    # os.open with 0o666 rather than tempfile.mkstemp: mkstemp makes the file 0600, and that
    # mode would survive the rename, hiding recordings from a trainer running as another user.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    return path


def write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write(path, lambda f: f.write(text.encode("utf-8")))


def save_tensors(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save`` atomically; ``load_tensors`` reads it back (weights only)."""
    import torch

    return atomic_write(path, lambda f: torch.save(obj, f))


def save_figure(fig: Any, path: str | os.PathLike, **savefig: Any) -> Path:
    """A matplotlib figure as PNG, atomically."""
    return atomic_write(path, lambda f: fig.savefig(f, format="png", **savefig))


def read_mapping(path: str | os.PathLike) -> dict:
    """A YAML file that must hold a mapping (an empty file is an empty one)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: cannot be read ({exc})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise UserError(f"{path}: not valid YAML{where}: {problem}") from None
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


def shipped_path(relative: str) -> Path:
    """``relative`` (e.g. ``config/safereach.yaml``) in the source tree, else in
    share/fosp_ros where ``pip install .`` or colcon put it."""
    candidates = [Path(__file__).resolve().parents[2] / relative,
                  Path(sys.prefix) / "share" / "fosp_ros" / relative]
    for prefix in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep):
        if prefix:
            candidates.append(Path(prefix) / "share" / "fosp_ros" / relative)
    for path in candidates:
        if path.exists():
            return path
    raise FileNotFoundError(f"{relative} not found in the source tree or share/fosp_ros "
                            f"(looked in {[str(c) for c in candidates]})")
