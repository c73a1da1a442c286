"""Strict JSON for reports and ``--json`` output, readable by any tool.

Python's ``json`` writes NaN and Infinity, which are not JSON: jq and Python read them back,
but JavaScript's ``JSON.parse``, Go's ``encoding/json`` and serde reject the whole file. A
figure that is undefined, such as the share of the actions leading into violations when
nothing violated, is written as ``null`` instead, as the dataset index already does.
"""

from __future__ import annotations

import json
import math
import os
from typing import Any


def strict(obj: Any) -> Any:
    """``obj`` with every non-finite float as None and numpy values as plain Python ones."""
    if isinstance(obj, dict):
        return {key: strict(value) for key, value in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [strict(value) for value in obj]
    if hasattr(obj, "tolist"):  # numpy arrays and scalars, without importing numpy here
        return strict(obj.tolist())
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def dumps(obj: Any, **kwargs: Any) -> str:
    """``json.dumps`` of ``strict(obj)``; refuses anything that would still not be JSON."""
    return json.dumps(strict(obj), allow_nan=False, **kwargs)


def write(obj: Any, path: str | os.PathLike) -> None:
    """Write ``obj`` to ``path`` as strict JSON: a temp file, then a rename, never half a file."""
    from fosp_core.util.files import write_text

    write_text(path, dumps(obj, indent=2) + "\n")


def number(value: float | None) -> float:
    """A figure read back from such a file: NaN where it was written as null."""
    return float("nan") if value is None else float(value)
