"""On-disk trajectory dataset: one ``.npz`` file per episode plus an ``index.json`` cache.

Layout of a dataset directory::

    traj_000000.npz
    traj_000001.npz
    ...
    index.json

Every trajectory file is a plain (uncompressed, pickle-free) ``np.savez`` archive whose arrays
all share the first dimension ``T = episode steps + 1`` (the Dreamer convention):

* row 0 is the reset observation, with ``action`` all zeros and ``reward = cost = 0``;
* row ``t > 0`` holds the observation *after* step ``t``, the action that produced it and the
  reward / cost that step earned.

So summing ``reward`` or ``cost`` over all rows gives the episode return, and ``action[1:]``
lines up with the transitions ``obs[:-1] -> obs[1:]``.

======== ============== =======  ===================================================
key      shape          dtype    meaning
======== ============== =======  ===================================================
image    (T, 64, 64, 3) uint8    camera image
pose     (T, 6)         float32  end-effector xyz + roll/pitch/yaw (see ``geometry``)
action   (T, 6)         float32  action that led to this row (zeros in row 0)
reward   (T,)           float32  reward earned by the step that led to this row
cost     (T,)           float32  safety cost of that step
state    (T, k)         float32  privileged low-dimensional state, k fixed per dataset
meta     ()             unicode  JSON object, see below
======== ============== =======  ===================================================

``meta`` holds at least ``task`` (str), ``behaviour`` (str: safe, unsafe, random, teleop,
policy, ...), ``seed`` (int or null), ``success`` (any reward > 0), ``violation`` (any
cost > 0), ``layout`` (free-form dict), ``format`` (currently 1) and ``length`` (T), plus
whatever else the recorder passed.

The trajectory files are the truth. ``index.json`` only caches one summary record per file so
that listing a large dataset does not decompress every image; ``load_index`` repairs it from the
files when it is missing, corrupt or stale.

Files are written atomically (temp file in the same directory, fsync, ``os.replace``), so a
crash or power cut leaves either the complete old state or the complete new one, never a
half-written ``traj_*.npz``. Nothing is ever loaded with pickle.
"""

from __future__ import annotations

import io
import json
import math
import os
import re
import sys
import threading
import zipfile
import zlib
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np

from fosp_core.util.errors import UserError
from fosp_core.util.files import atomic_write

FORMAT_VERSION = 1
INDEX_NAME = "index.json"
IMAGE_SHAPE = (64, 64, 3)
POSE_DIM = 6
ACTION_DIM = 6

TRAJECTORY_KEYS = ("image", "pose", "action", "reward", "cost", "state")
META_KEY = "meta"
REQUIRED_META_KEYS = ("task", "behaviour", "seed", "success", "violation", "layout")
INDEX_RECORD_KEYS = (
    "file",
    "task",
    "behaviour",
    "seed",
    "success",
    "violation",
    "length",
    "reward_return",
    "cost_return",
)
OUTCOME_KEYS = ("safe_success", "safe_fail", "unsafe_success", "unsafe_fail")

_TRAJ_RE = re.compile(r"^traj_(\d+)\.npz$")
_TRAJ_GLOB = "traj_*.npz"
_ZIP_MAGIC = b"PK\x03\x04"

# (dtype, shape after the time axis); None means "any width", the state vector's k.
_SPEC: dict[str, tuple[np.dtype, tuple[int | None, ...]]] = {
    "image": (np.dtype(np.uint8), IMAGE_SHAPE),
    "pose": (np.dtype(np.float32), (POSE_DIM,)),
    "action": (np.dtype(np.float32), (ACTION_DIM,)),
    "reward": (np.dtype(np.float32), ()),
    "cost": (np.dtype(np.float32), ()),
    "state": (np.dtype(np.float32), (None,)),
}


class DatasetError(UserError):
    """A dataset file or directory is unusable. ``str()`` always starts with the path."""

    def __init__(self, path: str | os.PathLike[str], reason: str) -> None:
        self.path = Path(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


# --------------------------------------------------------------------------------------------
# Validation


def validate_trajectory(arrays: Mapping[str, Any]) -> None:
    """Raise ``ValueError`` unless ``arrays`` is exactly one well-formed trajectory."""
    # ValueError even for wrong types (TRY004 silenced): callers rely on one exception class
    # meaning "this is not a valid trajectory", whatever the flaw.
    if not isinstance(arrays, Mapping):
        raise ValueError(  # noqa: TRY004
            f"trajectory must be a dict of arrays, got {type(arrays).__name__}"
        )
    missing = [k for k in TRAJECTORY_KEYS if k not in arrays]
    if missing:
        raise ValueError(f"trajectory is missing keys {missing}")
    # Unknown keys are refused rather than silently stored, so the format stays what the
    # module docstring says and readers never meet arrays they do not know about.
    extra = sorted(set(arrays) - set(TRAJECTORY_KEYS))
    if extra:
        raise ValueError(f"trajectory has unexpected keys {extra}; allowed: {TRAJECTORY_KEYS}")

    length: int | None = None
    for key in TRAJECTORY_KEYS:
        value = arrays[key]
        dtype, tail = _SPEC[key]
        if not isinstance(value, np.ndarray):
            raise ValueError(  # noqa: TRY004
                f"{key!r} must be a numpy array, got {type(value).__name__}"
            )
        # Exact dtypes, no silent casting: a float64 image or int reward is a recorder bug
        # that would otherwise surface much later as a confusing training problem.
        if value.dtype != dtype:
            raise ValueError(f"{key!r} must have dtype {dtype}, got {value.dtype}")
        if value.ndim != 1 + len(tail):
            want = "(T" + "".join(f", {d if d is not None else 'k'}" for d in tail) + ")"
            raise ValueError(f"{key!r} must have shape {want}, got {value.shape}")
        for axis, want_dim in enumerate(tail, start=1):
            if want_dim is not None and value.shape[axis] != want_dim:
                raise ValueError(
                    f"{key!r} must have size {want_dim} on axis {axis}, got shape {value.shape}"
                )
        if key == "state" and value.shape[1] < 1:
            raise ValueError(f"'state' must have at least one column, got shape {value.shape}")
        if length is None:
            length = value.shape[0]
        elif value.shape[0] != length:
            raise ValueError(
                f"mismatched lengths: {key!r} has {value.shape[0]} rows, "
                f"{TRAJECTORY_KEYS[0]!r} has {length}"
            )
        if value.dtype.kind == "f" and not np.all(np.isfinite(value)):
            bad = int(np.size(value) - np.count_nonzero(np.isfinite(value)))
            raise ValueError(f"{key!r} contains {bad} non-finite value(s) (NaN or inf)")
    if length is None or length < 1:
        raise ValueError("trajectory must have at least one row (the reset observation)")


def _json_default(obj: Any) -> Any:
    # Recorders naturally hand over numpy scalars (seeds, flags); store them as plain JSON.
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"meta value of type {type(obj).__name__} is not JSON serialisable")


def _prepare_meta(arrays: Mapping[str, np.ndarray], meta: Mapping[str, Any]) -> dict[str, Any]:
    """Check the caller's meta against the arrays and return the dict that gets stored."""
    if not isinstance(meta, Mapping):
        raise ValueError(f"meta must be a dict, got {type(meta).__name__}")  # noqa: TRY004
    out = dict(meta)
    success = bool(np.any(arrays["reward"] > 0))
    violation = bool(np.any(arrays["cost"] > 0))
    # success / violation are defined by the arrays; filling them in spares every recorder the
    # bookkeeping, and a contradicting value means the caller computed something else.
    for key, derived in (("success", success), ("violation", violation)):
        if key not in out:
            out[key] = derived
        elif not isinstance(out[key], (bool, np.bool_)) or bool(out[key]) != derived:
            raise ValueError(
                f"meta[{key!r}]={out[key]!r} contradicts the arrays (derived {derived}: "
                f"{'reward' if key == 'success' else 'cost'} > 0 in any row)"
            )
        else:
            out[key] = bool(out[key])
    missing = [k for k in REQUIRED_META_KEYS if k not in out]
    if missing:
        raise ValueError(f"meta is missing keys {missing}")
    if not isinstance(out["task"], str):
        raise ValueError(  # noqa: TRY004
            f"meta['task'] must be a str, got {type(out['task']).__name__}"
        )
    if not isinstance(out["behaviour"], str) or not out["behaviour"]:
        raise ValueError(f"meta['behaviour'] must be a non-empty str, got {out['behaviour']!r}")
    seed = out["seed"]
    seed_ok = isinstance(seed, (int, np.integer)) and not isinstance(seed, (bool, np.bool_))
    if seed is not None and not seed_ok:
        raise ValueError(f"meta['seed'] must be an int or None, got {seed!r}")
    if not isinstance(out["layout"], Mapping):
        raise ValueError(  # noqa: TRY004
            f"meta['layout'] must be a dict, got {type(out['layout']).__name__}"
        )
    out["format"] = FORMAT_VERSION
    out["length"] = int(arrays["reward"].shape[0])
    return out


def _meta_to_json(meta: Mapping[str, Any]) -> str:
    try:
        # allow_nan=False: NaN is not JSON and other tools would choke on the file.
        return json.dumps(meta, default=_json_default, allow_nan=False, sort_keys=True)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"meta is not JSON serialisable: {exc}") from exc


def write_trajectory(path: str | os.PathLike[str], arrays: Mapping[str, Any],
                     meta: Mapping[str, Any]) -> None:
    """Validate and atomically write one trajectory file (see the module docstring).

    ``meta`` must contain ``task``, ``behaviour``, ``seed`` and ``layout``; ``success`` and
    ``violation`` are derived from reward / cost when absent and must agree with them when
    given; ``format`` and ``length`` are always set here. Raises ``ValueError`` on bad input.
    """
    atomic_write(Path(path), _encoder(arrays, meta))


def _encoder(arrays: Mapping[str, Any], meta: Mapping[str, Any]) -> Callable[[IO[bytes]], None]:
    """Validate now; return the function that writes the .npz content to a file object."""
    validate_trajectory(arrays)
    meta_json = np.array(_meta_to_json(_prepare_meta(arrays, meta)))  # 0-d unicode, no pickle
    payload = {key: arrays[key] for key in TRAJECTORY_KEYS}

    def write(f: IO[bytes]) -> None:
        # Through a file object, because np.savez appends ".npz" to a bare name.
        np.savez(f, **payload, meta=meta_json)

    return write


def rows_to_arrays(rows: Sequence[Mapping[str, Any]], image_size: int, state_dim: int
                   ) -> dict[str, np.ndarray]:
    """Per-step rows recorded live (dicts of image, pose, action, reward, cost, state) ->
    trajectory arrays with the dataset's dtypes. A row without an image or a state (a
    state-mode policy, a robot without the twin's state) gets zeros of the given size."""
    blank_image = np.zeros((image_size, image_size, 3), np.uint8)
    blank_state = np.zeros(state_dim, np.float32)
    return {
        "image": np.stack([r.get("image", blank_image) for r in rows]).astype(np.uint8),
        "pose": np.stack([r["pose"] for r in rows]).astype(np.float32),
        "action": np.stack([r["action"] for r in rows]).astype(np.float32),
        "reward": np.array([r["reward"] for r in rows], np.float32),
        "cost": np.array([r["cost"] for r in rows], np.float32),
        "state": np.stack([r.get("state", blank_state) for r in rows]).astype(np.float32),
    }


def trajectory_to_bytes(arrays: Mapping[str, Any], meta: Mapping[str, Any]) -> bytes:
    """The exact content of a trajectory file, in memory (sent over ROS to a learner)."""
    buffer = io.BytesIO()
    _encoder(arrays, meta)(buffer)
    return buffer.getvalue()


def trajectory_from_bytes(data: bytes, label: str = "<message>") -> tuple[dict, dict]:
    """Inverse of ``trajectory_to_bytes``, with the checks of ``read_trajectory``."""
    try:
        return _decode_npz(Path(label), data[:4], lambda: io.BytesIO(data))
    except DatasetError:
        raise
    except Exception as exc:
        raise DatasetError(label, str(exc) or type(exc).__name__) from exc


# --------------------------------------------------------------------------------------------
# Reading


def _decode_meta(path: Path, value: np.ndarray) -> dict[str, Any]:
    if value.shape != () or value.dtype.kind != "U":
        raise DatasetError(
            path, f"'meta' must be a 0-d unicode array, got {value.dtype} shape {value.shape}"
        )
    try:
        meta = json.loads(str(value[()]))
    except json.JSONDecodeError as exc:
        raise DatasetError(path, f"'meta' is not valid JSON: {exc}") from exc
    if not isinstance(meta, dict):
        raise DatasetError(path, f"'meta' must be a JSON object, got {type(meta).__name__}")
    return meta


def read_trajectory(path: str | os.PathLike[str]) -> tuple[dict[str, np.ndarray], dict]:
    """Load one trajectory file as ``(arrays, meta)``; any problem raises ``DatasetError``."""
    path = Path(path)
    try:
        arrays, meta = _read_trajectory(path)
    except (DatasetError, MemoryError):
        raise
    except Exception as exc:
        # Damaged files fail in many ways (BadZipFile, EOFError, zlib.error, OSError, CRC
        # ValueError, ...); callers only need to know which file and why.
        reason = str(exc) or type(exc).__name__
        if not isinstance(exc, ValueError):
            reason = f"{type(exc).__name__}: {reason}"
        raise DatasetError(path, reason) from exc
    return arrays, meta


def read_meta(path: str | os.PathLike[str]) -> dict | None:
    """Only the metadata of a trajectory file (its arrays are not read); None if unreadable."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as npz:
            return _decode_meta(path, npz["meta"])
    except (OSError, EOFError, KeyError, ValueError, zipfile.BadZipFile, zlib.error):
        return None


def _read_trajectory(path: Path) -> tuple[dict[str, np.ndarray], dict]:
    if not path.is_file():
        raise DatasetError(path, "no such trajectory file")
    if path.stat().st_size == 0:
        raise DatasetError(path, "file is empty (0 bytes)")
    with open(path, "rb") as f:
        head = f.read(4)
    return _decode_npz(path, head, lambda: path)


def _decode_npz(path: Path, head: bytes, source: Callable[[], Any]
                ) -> tuple[dict[str, np.ndarray], dict]:
    # Checked here because np.load treats any unknown content as a pickle and answers with
    # advice to enable pickle loading, which is the wrong thing to tell anyone about a bad file.
    if head != _ZIP_MAGIC:
        raise DatasetError(path, f"not an .npz archive (starts with {head!r}, no zip header)")
    loaded = np.load(source(), allow_pickle=False)
    if not isinstance(loaded, np.lib.npyio.NpzFile):
        raise DatasetError(path, f"not an .npz archive (np.load gave {type(loaded).__name__})")
    with loaded as npz:
        names = set(npz.files)
        missing = [k for k in (*TRAJECTORY_KEYS, META_KEY) if k not in names]
        if missing:
            raise ValueError(f"archive is missing arrays {missing}")
        # Reading every member here (not lazily later) surfaces CRC / truncation errors now.
        arrays = {key: npz[key] for key in TRAJECTORY_KEYS}
        meta = _decode_meta(path, npz[META_KEY])
    validate_trajectory(arrays)
    length = arrays["reward"].shape[0]
    if meta.get("length", length) != length:
        raise ValueError(f"meta length {meta.get('length')!r} does not match {length} rows")
    return arrays, meta


# --------------------------------------------------------------------------------------------
# Trajectories, datasets and the index


def _sum(values: np.ndarray) -> float:
    # float64 accumulation so the index cache and a fresh load agree exactly.
    return float(np.sum(values, dtype=np.float64))


@dataclass
class Trajectory:
    arrays: dict[str, np.ndarray]
    meta: dict[str, Any]
    path: Path

    @property
    def reward_return(self) -> float:
        return _sum(self.arrays["reward"])

    @property
    def cost_return(self) -> float:
        return _sum(self.arrays["cost"])

    @property
    def success(self) -> bool:
        if "success" in self.meta:
            return bool(self.meta["success"])
        return bool(np.any(self.arrays["reward"] > 0))

    @property
    def violation(self) -> bool:
        if "violation" in self.meta:
            return bool(self.meta["violation"])
        return bool(np.any(self.arrays["cost"] > 0))

    @property
    def behaviour(self) -> str:
        return str(self.meta.get("behaviour", "unknown"))

    @property
    def length(self) -> int:
        """Number of rows T (= episode steps + 1)."""
        return int(self.arrays["reward"].shape[0])

    def record(self) -> dict[str, Any]:
        """The ``index.json`` record of this trajectory."""
        return {
            "file": self.path.name,
            "task": self.meta.get("task"),
            "behaviour": self.behaviour,
            "seed": self.meta.get("seed"),
            "success": self.success,
            "violation": self.violation,
            "length": self.length,
            "reward_return": self.reward_return,
            "cost_return": self.cost_return,
        }


@dataclass
class Dataset:
    trajectories: list[Trajectory]
    errors: list[tuple[Path, str]] = field(default_factory=list)
    directory: Path = Path(".")

    def __len__(self) -> int:
        return len(self.trajectories)

    def __iter__(self):
        return iter(self.trajectories)


def _check_directory(directory: str | os.PathLike[str]) -> Path:
    directory = Path(directory)
    if not directory.exists():
        raise DatasetError(directory, "dataset directory does not exist")
    if not directory.is_dir():
        raise DatasetError(directory, "dataset path is not a directory")
    return directory


def trajectory_files(directory: Path) -> list[Path]:
    """The dataset files of `directory`, in file-name (recording) order; none are read."""
    return sorted(p for p in directory.glob(_TRAJ_GLOB) if _TRAJ_RE.match(p.name))


def load_dataset(directory: str | os.PathLike[str], strict: bool = False) -> Dataset:
    """Read every ``traj_*.npz`` in ``directory`` in file-name order (index.json is ignored).

    With ``strict=False`` unreadable files are listed in ``Dataset.errors`` as
    ``(path, reason)`` and the rest is returned; with ``strict=True`` the first one raises
    ``DatasetError``. A file whose state vector is not as wide as most others' is unreadable
    too: the dataset's rows must stack.
    """
    directory = _check_directory(directory)
    trajectories: list[Trajectory] = []
    errors: list[tuple[Path, str]] = []
    for path in trajectory_files(directory):
        try:
            arrays, meta = read_trajectory(path)
        except DatasetError as exc:
            if strict:
                raise
            errors.append((path, exc.reason))
            continue
        trajectories.append(Trajectory(arrays=arrays, meta=meta, path=path))
    widths = Counter(t.arrays["state"].shape[1] for t in trajectories)
    if len(widths) > 1:
        width = widths.most_common(1)[0][0]
        for t in trajectories:
            if t.arrays["state"].shape[1] != width:
                reason = (f"'state' has {t.arrays['state'].shape[1]} columns; the dataset's "
                          f"other trajectories have {width}")
                if strict:
                    raise DatasetError(t.path, reason)
                errors.append((t.path, reason))
        trajectories = [t for t in trajectories if t.arrays["state"].shape[1] == width]
    errors.sort()
    return Dataset(trajectories=trajectories, errors=errors, directory=directory)


def load_training_data(directory: str | os.PathLike[str], skip_bad: bool = False) -> Dataset:
    """``load_dataset`` for training on it. An unreadable file stops it (``DatasetError``
    naming each one) unless ``skip_bad``: then the others are used and the skipped ones are
    told on stderr. A directory without one readable trajectory (a wrong path, most likely)
    is an error either way, not an empty replay."""
    dataset = load_dataset(directory)
    if dataset.errors:
        shown = "; ".join(f"{path.name}: {reason}" for path, reason in dataset.errors[:4])
        more = f"; and {len(dataset.errors) - 4} more" if len(dataset.errors) > 4 else ""
        what = (f"{len(dataset.errors)} of {len(dataset.errors) + len(dataset)} trajectory "
                f"files are unreadable ({shown}{more})")
        if not skip_bad:
            raise DatasetError(directory, f"{what}; fix or remove them, or skip them with "
                               "--skip-bad (fosp dataset info lists them all)")
        print(f"warning: {directory}: skipping {what}", file=sys.stderr)
    if len(dataset) == 0:
        raise DatasetError(directory, "no readable trajectories")
    return dataset


def _valid_record(record: Any) -> bool:
    if not isinstance(record, dict) or any(k not in record for k in INDEX_RECORD_KEYS):
        return False
    return (
        isinstance(record["file"], str)
        and _TRAJ_RE.match(record["file"]) is not None
        and isinstance(record["behaviour"], str)
        and isinstance(record["success"], bool)
        and isinstance(record["violation"], bool)
        and isinstance(record["length"], int)
        and isinstance(record["reward_return"], (int, float))
        and isinstance(record["cost_return"], (int, float))
    )


def _read_index_records(directory: Path) -> dict[str, dict] | None:
    try:
        data = json.loads((directory / INDEX_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("format") != FORMAT_VERSION:
        return None
    episodes = data.get("episodes")
    if not isinstance(episodes, list) or not all(_valid_record(r) for r in episodes):
        return None
    return {r["file"]: r for r in episodes}


def load_index(directory: str | os.PathLike[str]) -> list[dict]:
    """Summary records of the readable trajectories, in file order.

    Records come from ``index.json`` when it is present and valid; a missing or corrupt index
    is rebuilt from the files, and a stale one is repaired (records of vanished files dropped,
    files the index lacks, e.g. after a crash between the two writes, read). Unreadable
    trajectory files are left out. Nothing is written; ``DatasetWriter`` rewrites the index.
    """
    directory = _check_directory(directory)
    cached = _read_index_records(directory) or {}
    records = []
    for path in trajectory_files(directory):
        record = cached.get(path.name)
        if record is None:
            try:
                arrays, meta = read_trajectory(path)
            except DatasetError:
                continue
            record = Trajectory(arrays=arrays, meta=meta, path=path).record()
        records.append(record)
    return records


def _write_index(directory: Path, records: list[dict]) -> None:
    text = json.dumps({"format": FORMAT_VERSION, "episodes": records}, indent=1,
                      default=_json_default, allow_nan=False)
    atomic_write(directory / INDEX_NAME, lambda f: f.write(text.encode("utf-8") + b"\n"))


class DatasetWriter:
    """Appends trajectories to a dataset directory, keeping ``index.json`` up to date.

    Numbering continues after the highest existing ``traj_NNNNNN.npz``, so a restarted
    recorder appends and never overwrites. Safe to call from several threads of one process;
    two processes writing the same directory at once is not supported.
    """

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        existing = [int(m.group(1)) for p in self.directory.iterdir()
                    if (m := _TRAJ_RE.match(p.name))]
        self._next = max(existing, default=-1) + 1
        self._records = load_index(self.directory)
        self._state_dim: int | None = None
        for rec in reversed(self._records):
            self._state_dim = _peek_state_dim(self.directory / rec["file"])
            if self._state_dim is not None:
                break

    def __len__(self) -> int:
        with self._lock:
            return len(self._records)

    @property
    def records(self) -> list[dict]:
        with self._lock:
            return [dict(r) for r in self._records]

    def add(self, arrays: Mapping[str, Any], meta: Mapping[str, Any]) -> Path:
        """Write the next trajectory, then the index; return the trajectory's path.

        Raises ``ValueError`` (nothing written) on an invalid trajectory or meta.
        """
        validate_trajectory(arrays)
        with self._lock:
            k = int(arrays["state"].shape[1])
            if self._state_dim is not None and k != self._state_dim:
                raise ValueError(
                    f"'state' has {k} columns but this dataset uses {self._state_dim}"
                )
            path = self.directory / f"traj_{self._next:06d}.npz"
            # Cheap guard against clobbering a file someone else dropped in meanwhile.
            while path.exists():
                self._next += 1
                path = self.directory / f"traj_{self._next:06d}.npz"
            write_trajectory(path, arrays, meta)
            self._next += 1
            self._state_dim = k
            # Computed from what we wrote, so the index is exactly what a reload would build.
            stored_meta = _prepare_meta(arrays, meta)
            self._records.append(Trajectory(dict(arrays), stored_meta, path).record())
            _write_index(self.directory, self._records)
            return path


def _peek_state_dim(path: Path) -> int | None:
    try:
        with np.load(path, allow_pickle=False) as npz:
            shape = npz["state"].shape
    except (OSError, EOFError, KeyError, ValueError, zipfile.BadZipFile, zlib.error):
        return None
    return int(shape[1]) if len(shape) == 2 else None


# --------------------------------------------------------------------------------------------
# Summaries and plots


def _outcome(record: Trajectory | Mapping[str, Any]) -> tuple[str, bool, bool, float, float]:
    if isinstance(record, Trajectory):
        return (record.behaviour, record.success, record.violation, record.reward_return,
                record.cost_return)
    return (
        str(record.get("behaviour", "unknown")),
        bool(record["success"]),
        bool(record["violation"]),
        float(record["reward_return"]),
        float(record["cost_return"]),
    )


def outcome_key(success: bool, violation: bool) -> str:
    """One of ``OUTCOME_KEYS``."""
    return f"{'unsafe' if violation else 'safe'}_{'success' if success else 'fail'}"


def _stats(rows: list[tuple[str, bool, bool, float, float]]) -> dict[str, Any]:
    n = len(rows)
    outcomes = dict.fromkeys(OUTCOME_KEYS, 0)
    for _, success, violation, _, _ in rows:
        outcomes[outcome_key(success, violation)] += 1
    if n == 0:
        return {"episodes": 0, "success_rate": 0.0, "violation_rate": 0.0,
                "reward_return": 0.0, "cost_return": 0.0, "outcomes": outcomes}
    return {
        "episodes": n,
        "success_rate": sum(r[1] for r in rows) / n,
        "violation_rate": sum(r[2] for r in rows) / n,
        "reward_return": math.fsum(r[3] for r in rows) / n,
        "cost_return": math.fsum(r[4] for r in rows) / n,
        "outcomes": outcomes,
    }


def summarize(records: Iterable[Trajectory | Mapping[str, Any]]) -> dict[str, Any]:
    """Rates, mean returns and safe/unsafe x success/fail counts, overall and per behaviour.

    Accepts ``Trajectory`` objects, ``index.json`` records, or a ``Dataset``.
    """
    if isinstance(records, Dataset):
        records = records.trajectories
    rows = [_outcome(r) for r in records]
    summary = _stats(rows)
    behaviours = sorted({r[0] for r in rows})
    summary["by_behaviour"] = {b: _stats([r for r in rows if r[0] == b]) for b in behaviours}
    return summary


def format_summary(summary: Mapping[str, Any],
                   errors: Iterable[tuple[str | os.PathLike[str], str]] = ()) -> str:
    """Plain-text table of a ``summarize`` result, plus any unreadable files."""
    header = ("behaviour", "episodes", "success %", "violation %", "reward ret", "cost ret")
    rows = [("all", summary)]
    rows += list(summary.get("by_behaviour", {}).items())
    table = [header] + [
        (
            str(name),
            str(s["episodes"]),
            f"{100.0 * s['success_rate']:.1f}",
            f"{100.0 * s['violation_rate']:.1f}",
            f"{s['reward_return']:.3f}",
            f"{s['cost_return']:.3f}",
        )
        for name, s in rows
    ]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    lines = []
    for i, row in enumerate(table):
        cells = [row[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(row[1:], widths[1:])]
        lines.append("  ".join(cells).rstrip())
        if i == 0:
            lines.append("  ".join("-" * w for w in widths))
    outcomes = summary.get("outcomes", {})
    lines.append("")
    lines.append("outcomes: " + "  ".join(f"{k}={outcomes.get(k, 0)}" for k in OUTCOME_KEYS))
    errors = list(errors)
    if errors:
        lines.append("")
        lines.append(f"unreadable files ({len(errors)}):")
        lines.extend(f"  {path}: {reason}" for path, reason in errors)
    return "\n".join(lines) + "\n"


def plot_returns(records: Iterable[Trajectory | Mapping[str, Any]],
                 png_path: str | os.PathLike[str]) -> None:
    """Scatter reward return (x) vs cost return (y), one colour per behaviour; write a PNG."""
    # Figure + Agg canvas instead of pyplot: no global backend switch in the caller's process
    # (a ROS node or notebook may have its own) and no shared pyplot state across threads.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if isinstance(records, Dataset):
        records = records.trajectories
    rows = [_outcome(r) for r in records]
    fig = Figure(figsize=(6.0, 4.5), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    colours = [f"C{i}" for i in range(10)]
    for i, behaviour in enumerate(sorted({r[0] for r in rows})):
        xs = [r[3] for r in rows if r[0] == behaviour]
        ys = [r[4] for r in rows if r[0] == behaviour]
        ax.scatter(xs, ys, s=18, alpha=0.7, color=colours[i % len(colours)],
                   label=f"{behaviour} ({len(xs)})")
    if rows:
        ax.legend(loc="best", fontsize="small")
    _finish_plot(fig, ax, "reward return", "cost return",
                 f"Dataset distribution ({len(rows)} episodes)", png_path)


def _finish_plot(fig, ax, xlabel: str, ylabel: str, title: str,
                 png_path: str | os.PathLike[str]) -> None:
    """Labels, grid and layout, then the PNG, written atomically."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    atomic_write(Path(png_path), lambda f: fig.savefig(f, format="png"))


PATH_COLOURS = {"safe_success": "tab:green", "safe_fail": "tab:gray",
                "unsafe_success": "tab:orange", "unsafe_fail": "tab:red"}


def plot_paths(records: Iterable[Trajectory], png_path: str | os.PathLike[str]
               ) -> dict[str, int]:
    """Top view of every trajectory's gripper path (``pose`` x, y), one colour per outcome,
    with a cross where each violation began and a circle where the target was first reached:
    where demonstrations (or fine-tuning trajectories) go and where they collide. Returns the
    paths drawn per outcome."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    if isinstance(records, Dataset):
        records = records.trajectories
    fig = Figure(figsize=(8.0, 6.0), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    counts = dict.fromkeys(OUTCOME_KEYS, 0)
    for t in records:
        x, y = t.arrays["pose"][:, 0], t.arrays["pose"][:, 1]
        key = outcome_key(t.success, t.violation)
        counts[key] += 1
        ax.plot(x, y, color=PATH_COLOURS[key], lw=0.8, alpha=0.5)
        for label, marker in (("cost", "x"), ("reward", "o")):
            hits = np.flatnonzero(t.arrays[label] > 0)
            if hits.size:  # the first row that earned a cost / the reward
                ax.plot(x[hits[0]], y[hits[0]], marker=marker, ms=5, ls="none", mfc="none",
                        color="black" if label == "cost" else "tab:green")
    handles = [Line2D([], [], color=PATH_COLOURS[k], label=f"{k} ({n})")
               for k, n in counts.items() if n]
    handles += [Line2D([], [], marker="x", ls="none", color="black", label="first cost"),
                Line2D([], [], marker="o", ls="none", mfc="none", color="tab:green",
                       label="target first reached")]
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize="small")
    ax.set_aspect("equal", adjustable="datalim")
    _finish_plot(fig, ax, "x (m)", "y (m)",
                 f"Gripper paths, top view ({sum(counts.values())} episodes)", png_path)
    return counts
