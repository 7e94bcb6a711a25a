"""awd-score: raw lines → log-probabilities, as fairseq-eval-lm scores them."""

import json
import math
import os
import subprocess
import sys

import pytest
import torch

import awd_plugins  # noqa: F401
from awd_plugins.cli import score
from awd_plugins.cli.dynamic_eval_search import evaluate
from awd_plugins.errors import AwdUserError
from test_dynamic_eval import ONE_THREAD, checkpoint  # noqa: F401  (shared tiny checkpoint)

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py


def raw_test_lines(small_bin):
    with open(os.path.join(os.path.dirname(small_bin), "raw", "test.txt"), encoding="utf-8") as f:
        return f.read().split("\n")[:-1]


def test_carry_over_the_test_split_sums_to_eval_lm_total(checkpoint, small_bin, tmp_path):
    text = tmp_path / "test.txt"
    text.write_text("\n".join(raw_test_lines(small_bin)) + "\n", encoding="utf-8")
    out = tmp_path / "scores.jsonl"
    score.main([str(text), "--path", checkpoint, "--data", small_bin, "--state", "carry", "--bptt", "20",
                "--format", "json", "--output", str(out), "--cpu"])
    recs = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [r["line"] for r in recs] == list(range(1, len(raw_test_lines(small_bin)) + 1))
    model, task = score.load_model(checkpoint, small_bin, cpu=True, overrides={"bptt": 20})
    total, count = evaluate(model, task, "test")  # fairseq-eval-lm's path: SequenceScorer over the task's windows
    assert sum(r["tokens"] for r in recs) == count
    assert sum(r["logprob"] for r in recs) == pytest.approx(-total, rel=1e-6)
    # with the cache pointer and dynamic evaluation, as fairseq-eval-lm computes them
    from awd_plugins.dynamic_eval import DynamicEvaluator

    opts = ["--pointer-window", "40", "--dynamic-eval", "sgd", "--dynamic-eval-lr", "0.2", "--dynamic-eval-bptt", "8"]
    adapted = score.main([str(text), "--path", checkpoint, "--data", small_bin, "--state", "carry", "--bptt", "20",
                          "--cpu", *opts])
    model.set_pointer(40, 1.0, 0.1)
    evaluator = DynamicEvaluator(model, "sgd", 0.2, 0.002)
    dyn_total, _ = evaluate(model, task, "test", evaluator, seg_len=8)
    assert sum(lp.double().sum().item() for lp in adapted) == pytest.approx(-dyn_total, rel=1e-6)
    assert -dyn_total > -total + 10  # and it helps
    r = recs[3]
    assert r["logprob_base2"] == pytest.approx(r["logprob"] / math.log(2))
    assert r["ppl"] == pytest.approx(math.exp(-r["logprob"] / r["tokens"]))


def test_reset_is_a_fresh_state_per_line_and_independent_of_batch_size(checkpoint, small_bin):
    from _helpers import per_token_loop

    model, task = score.load_model(checkpoint, small_bin, cpu=True)
    d = task.target_dictionary
    lines = score.encode_lines(raw_test_lines(small_bin)[:9] + ["", "the the the"], small_bin, d)
    results = {b: score.score_reset(model, lines, b, d.eos(), d.pad()) for b in (1, 4, 11)}
    for ids, one, four, eleven in zip(lines, results[1], results[4], results[11]):
        assert one.numel() == ids.numel() + 1  # the line's tokens and its </s>
        assert torch.allclose(one, four, atol=1e-5) and torch.allclose(one, eleven, atol=1e-5)
    # each line equals a token-by-token loop from a fresh state over </s> line </s>
    for ids, got in list(zip(lines, results[4]))[3:6]:
        nll, _, _ = per_token_loop(model, torch.cat([torch.tensor([d.eos()]), ids, torch.tensor([d.eos()])]))
        assert torch.allclose(got, -nll, atol=1e-5)


def test_cli_stdin_tsv_per_token_and_errors(checkpoint, small_bin, tmp_path):
    from conftest import run

    cmd = [sys.executable, "-m", "awd_plugins.cli.score", "--path", checkpoint, "--data", small_bin, "--per-token",
           "--batch-size", "2", "--cpu"]
    env = {**os.environ, **ONE_THREAD}
    proc = subprocess.run(cmd, input="The game was released .\n\nzzz unknownword\n", capture_output=True, text=True,
                          env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [line.split("\t") for line in proc.stdout.splitlines()]
    assert rows[0] == ["logprob", "logprob_base2", "tokens", "ppl", "symbols", "token_logprobs"]
    assert [r[2] for r in rows[1:]] == ["6", "1", "3"]
    assert rows[1][4].split() == ["The", "game", "was", "released", ".", "</s>"]
    assert rows[3][4].split() == ["<unk>", "<unk>", "</s>"]
    assert sum(float(x) for x in rows[1][5].split()) == pytest.approx(float(rows[1][0]), abs=1e-3)
    # bad input: one error line, exit 2, nothing written or overwritten
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"caf\xe9\n")
    keep = tmp_path / "keep.tsv"
    keep.write_text("mine\n")
    proc = subprocess.run(cmd + [str(bad)], capture_output=True, text=True, env=env)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    errors = [line for line in proc.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1 and errors[0].startswith("awd-score: error:") and "not UTF-8" in errors[0]
    for args, message in [(["--output", str(keep)], "already exists"),
                          (["--state", "reset", "--pointer-window", "10"], "--state carry"),
                          (["--batch-size", "0"], "--batch-size")]:
        with pytest.raises(AwdUserError, match=message):
            score.main([str(bad), "--path", checkpoint, "--data", small_bin, *args])
    assert keep.read_text() == "mine\n" and sorted(os.listdir(tmp_path)) == ["bad.txt", "keep.tsv"]
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(AwdUserError, match="garbage.pt: not a readable checkpoint"):
        score.load_model(str(garbage), small_bin)
