"""fosp bench: the measuring code runs and reports sane figures (no timing asserted)."""

import math

from fosp_core.bench import dataset_load_time, format_results, policy_step_latency


def test_bench_pieces_run_and_report():
    latency = policy_step_latency("cpu", obs="state", steps=15)
    assert 0 < latency["p50"] <= latency["p99"] < 10_000
    assert dataset_load_time(3) > 0
    results = {"policy_step_ms_p50_cpu": 1.0, "policy_step_ms_p99_cpu": 2.0,
               "policy_step_ms_p50_paper": 3.0, "policy_step_ms_p99_paper": 4.0,
               "train_step_s_cpu": 0.5, "finetune_round_s_cpu": 20.0, "policy_loop_ticks": 200,
               "deadline_misses": 0, "sim_steps_per_s": 150.0, "dataset_load_s_200": 1.5}
    text = format_results(results)
    assert "paper config" in text and "200 / 0" in text
    assert not math.isnan(latency["p99"])
