"""fosp bench: the measuring code runs and reports sane figures (no timing asserted)."""

import math

from fosp_core.bench import dataset_load_time, format_results, policy_step_latency


def test_bench_pieces_run_and_report():
    latency = policy_step_latency("cpu", obs="state", steps=15)
    assert 0 < latency["p50"] <= latency["p99"] < 10_000
    assert dataset_load_time(3) > 0
    results = {"policy_step_ms_p50_cpu": 1.0, "policy_step_ms_p99_cpu": 2.0,
               "policy_step_ms_p50_paper": 3.0, "policy_step_ms_p99_paper": 4.0,
               "train_step_s_cpu": 0.5, "train_step_s_cpu_bf16": 0.3,
               "finetune_round_s_cpu": 20.0, "policy_loop_ticks": 200,
               "deadline_misses": 0, "sim_steps_per_s": 150.0, "dataset_load_s_200": 1.5}
    text = format_results(results)
    assert "paper config" in text and "200 / 0" in text and "0.50 / 0.30" in text
    assert not math.isnan(latency["p99"])


def test_bench_against_a_revision_measures_both_trees_in_turn():
    import pytest

    from fosp_core.bench import compare_with, format_comparison

    said = []
    result = compare_with("HEAD", rounds=1, steps=1, progress=said.append)
    assert said == ["round 1 of 1: this...", "round 1 of 1: HEAD..."]
    for key in ("train_step_s_fp32", "policy_step_ms_p50", "policy_step_ms_p99"):
        assert result["this"][key] > 0 and result["other"][key] > 0
        assert 0 < result["ratio"][key] < 100
    assert "ratio = this / HEAD" in format_comparison(result)
    with pytest.raises(ValueError, match="--against nope: not a revision"):
        compare_with("nope", rounds=1)
