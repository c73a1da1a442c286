"""Reports and --json output are strict JSON: an undefined figure is null, never NaN."""

import json
import math

import numpy as np
import pytest

from fosp_core.learning.finetune_compare import load_report, pool
from fosp_core.learning.finetune_run import format_report
from fosp_core.util import jsonfile
from tests.agent_helpers import strict_loads


def test_non_finite_floats_become_null_and_numpy_values_plain():
    obj = {"nan": float("nan"), "inf": -math.inf, "f32": np.float32(0.5),
           "f64_nan": np.float64("nan"), "int": np.int64(3), "flag": True, "text": "a",
           "pair": (1.0, float("inf")), "array": np.array([0.25, np.nan]), "none": None}
    assert strict_loads(jsonfile.dumps(obj)) == {
        "nan": None, "inf": None, "f32": 0.5, "f64_nan": None, "int": 3, "flag": True,
        "text": "a", "pair": [1.0, None], "array": [0.25, None], "none": None}
    assert type(strict_loads(jsonfile.dumps(obj))["int"]) is int
    with pytest.raises(ValueError):
        strict_loads(json.dumps(obj["nan"]))  # what the files held before


def test_write_is_strict_and_leaves_no_temp_file(tmp_path):
    path = tmp_path / "report.json"
    jsonfile.write({"share": float("nan"), "rate": 0.1}, path)
    assert strict_loads(path.read_text()) == {"share": None, "rate": 0.1}
    assert [p.name for p in tmp_path.iterdir()] == ["report.json"]
    assert math.isnan(jsonfile.number(None)) and jsonfile.number(0.1) == 0.1


def _report(lead_in, cost_regret=0.0):
    row = {"episodes": 2, "success_rate": 1.0, "violation_rate": 0.0, "success_ci": [0.3, 1.0],
           "violation_ci": [0.0, 0.7], "reward_return": 50.0, "cost_return": 0.0,
           "online_share": 0.5}
    return {"task": "safereach-target-shape", "pex": True, "seed": 0, "algo": "fosp",
            "obs_mode": "state", "trajectories": 2, "grad_steps": 2, "deterministic": False,
            "before": dict(row), "after": dict(row),
            "during": dict(row, cost_regret=cost_regret, lead_in_offline_share=lead_in),
            "log": []}


def test_a_written_report_reads_back_in_the_report_and_compare(tmp_path):
    """The readers take null where they took NaN: no lead-in line, a NaN cost regret."""
    jsonfile.write(_report(float("nan")), tmp_path / "report.json")
    report, _, _ = load_report(tmp_path)
    assert report["during"]["lead_in_offline_share"] is None
    text = format_report(report)
    assert "cost regret" in text and "actions up to each violation" not in text
    jsonfile.write(_report(float("nan"), cost_regret=float("nan")), tmp_path / "report.json")
    assert math.isnan(pool([load_report(tmp_path)])[0].cost_regret[0])
    jsonfile.write(_report(0.75), tmp_path / "report.json")
    assert "offline policy chose 75% of the 5 actions" in format_report(
        load_report(tmp_path)[0])
