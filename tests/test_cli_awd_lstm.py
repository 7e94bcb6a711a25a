"""End to end through fairseq's command lines: fairseq-preprocess → fairseq-train (with the
switch to averaged SGD) → fairseq-eval-lm (plain and with the cache pointer), resume after an
interruption, a 2-process CPU run, and bad input."""

import os
import re
import shutil
import socket
import subprocess

import pytest
import torch

import awd_plugins  # noqa: F401  (registers the task for in-process loading)
from conftest import PLUGIN, cli
from _helpers import naive_pointer, per_token_loop

TRAIN = [
    "--task", "awd_language_modeling", "--arch", "awd_lstm", "--emsize", "16", "--nhid", "24", "--nlayers", "2",
    "--criterion", "split_cross_entropy", "--optimizer", "nt_asgd", "--lr-scheduler", "nt_asgd", "--nonmono", "0",
    "--lr", "30", "--clip-norm", "0.25", "--batch-size", "4", "--bptt", "12", "--seed", "1", "--cpu",
    "--log-format", "simple", "--log-interval", "1000", "--num-workers", "0", "--no-epoch-checkpoints",
]


@pytest.fixture(scope="module")
def data_bin(rising_valid_bin):
    return rising_valid_bin


@pytest.fixture(scope="module")
def trained(data_bin, tmp_path_factory):
    """4 epochs; the validation loss rises by epoch 2 or 3, which triggers NT-ASGD (nonmono 0)."""
    save = tmp_path_factory.mktemp("run_a")
    out = _train(data_bin, save, 4)
    return save, out


def _switch_epoch(log):
    m = re.search(r"NT-ASGD: switching to averaged SGD after epoch (\d+)", log)
    assert m, log[-3000:]
    return int(m.group(1))


def _train(data_bin, save, epochs, extra=()):
    from conftest import run

    return run(cli("fairseq-train") + [data_bin, *TRAIN, "--max-epoch", str(epochs), "--save-dir", str(save),
                                        "--user-dir", PLUGIN, *extra]).stdout


def _epoch_lines(log, epoch):
    return [re.sub(r"\| (wps|ups|wall|train_wall) [\d.]+ ?", "", line.split("|", 3)[-1])
            for line in log.splitlines() if re.search(rf"\| (train|valid) \| epoch {epoch:03d} ", line)]


def _eval(run_cli, data_bin, ckpt, *extra):
    out = run_cli("fairseq-eval-lm", data_bin, "--task", "awd_language_modeling", "--path", ckpt, "--cpu",
                  "--num-workers", "0", "--bptt", "25", *extra).stdout
    m = re.search(r"Loss \(base 2\): ([\d.]+), Perplexity: ([\d.]+)", out)
    assert m, out[-3000:]
    return float(m.group(1)), out


def test_asgd_switch_and_averaged_weights_in_checkpoints(trained):
    save, log = trained
    assert _switch_epoch(log) in (2, 3)
    assert "validating (and saving) the averaged weights" in log
    switch = _switch_epoch(log)
    best = torch.load(save / "checkpoint_best.pt", weights_only=True)
    # checkpoint_best.pt is written by the same save as checkpoint_last.pt whenever an averaged
    # validation is the best so far; on data whose validation keeps rising it stays an SGD one
    saved_after = best["extra_state"]["train_iterator"]["epoch"] - 1  # the iterator state points at the next epoch
    names = ["checkpoint_last.pt"] + (["checkpoint_best.pt"] if saved_after > switch else [])
    for name in names:
        state = torch.load(save / name, weights_only=True)
        opt = state["last_optimizer_state"]
        assert opt["mode"] == "asgd" and opt["raw_params"] is not None
        params = [v for k, v in state["model"].items() if k != "decoder.output_projection.weight"]
        # the optimizer orders parameters like model.parameters() (the tied decoder weight appears once)
        averaged = [opt["inner"]["state"][i]["ax"] for i in range(len(params))]
        assert all(torch.equal(p, ax) for p, ax in zip(params, averaged))
        assert any(not torch.equal(p, raw) for p, raw in zip(params, opt["raw_params"]))


def test_resume_after_interruption_continues_identically(trained, data_bin, tmp_path):
    _, uninterrupted = trained
    switch = _switch_epoch(uninterrupted)
    _train(data_bin, tmp_path, switch)  # interrupted right after the switch to averaging
    resumed = _train(data_bin, tmp_path, switch + 1)
    assert "restored the raw iterate" not in resumed  # the switch epoch's checkpoint precedes any averaging
    assert "validating (and saving) the averaged weights" in resumed  # resumed in averaging mode
    lines = _epoch_lines(resumed, switch + 1)
    assert lines == _epoch_lines(uninterrupted, switch + 1) and len(lines) == 2


def test_eval_lm_equals_a_per_token_loop_and_pointer(trained, data_bin, run_cli):
    from fairseq import checkpoint_utils

    save, _ = trained
    ckpt = str(save / "checkpoint_best.pt")
    loss, out = _eval(run_cli, data_bin, ckpt)
    assert "1 stream(s)" in out
    models, _, task = checkpoint_utils.load_model_ensemble_and_task([ckpt], arg_overrides={"data": data_bin})
    model = models[0].eval()
    task.load_dataset("test")
    stream = task.dataset("test").stream
    nll, hidden, probs = per_token_loop(model, stream)
    assert abs(nll.double().mean().item() / torch.log(torch.tensor(2.0)).item() - loss) < 2e-4
    # λ = 0 is the plain evaluation exactly
    assert _eval(run_cli, data_bin, ckpt, "--pointer-window", "30", "--pointer-lambda", "0")[0] == loss
    # the pointer through fairseq-eval-lm equals pointer.py's per-token rule on the same states
    ptr_loss, _ = _eval(run_cli, data_bin, ckpt, "--pointer-window", "30", "--pointer-theta", "0.5",
                        "--pointer-lambda", "0.2")
    ref = naive_pointer(probs, hidden, stream[1:], 30, 0.5, 0.2, 25)
    assert abs(ref.double().mean().item() / torch.log(torch.tensor(2.0)).item() - ptr_loss) < 2e-4
    assert ptr_loss != loss


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_process_cpu_run(data_bin, tmp_path):
    common = cli("fairseq-train") + [data_bin, *TRAIN, "--max-epoch", "1", "--save-dir", str(tmp_path),
                                     "--user-dir", PLUGIN, "--distributed-world-size", "2",
                                     "--distributed-backend", "gloo", "--distributed-no-spawn",
                                     "--distributed-init-method", f"tcp://127.0.0.1:{_free_port()}",
                                     "--ddp-backend", "legacy_ddp"]
    env = dict(os.environ, PYTHONWARNINGS="ignore", OMP_NUM_THREADS="1")
    rank1 = subprocess.Popen(common + ["--distributed-rank", "1"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             text=True, env=env)
    rank0 = subprocess.run(common + ["--distributed-rank", "0"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           text=True, env=env, timeout=600)
    out1 = rank1.communicate(timeout=600)[0]
    assert rank0.returncode == 0 and rank1.returncode == 0, rank0.stdout[-3000:] + out1[-3000:]
    assert re.search(r"\| train \| epoch 001 \|.*\| bsz 8 \|", rank0.stdout)  # 2 ranks × 4 streams
    assert (tmp_path / "checkpoint_last.pt").exists()


def _one_error_line(out):
    assert "Traceback" not in out, out[-3000:]
    errors = [line for line in out.splitlines() if ": error: " in line]
    assert len(errors) == 1, out[-3000:]
    return errors[0]


def test_bad_input_one_error_line_and_nothing_overwritten(trained, data_bin, run_cli, tmp_path):
    save, _ = trained
    keep = tmp_path / "keep"
    keep.mkdir()
    shutil.copy(save / "checkpoint_last.pt", keep / "checkpoint_last.pt")
    before = (keep / "checkpoint_last.pt").read_bytes()

    out = run_cli("fairseq-train", str(tmp_path / "no-such-dir"), *TRAIN, "--save-dir", str(keep), expect_fail=True)
    assert out.returncode == 2 and "data directory not found" in _one_error_line(out.stdout)

    out = run_cli("fairseq-train", data_bin, *TRAIN, "--dropout", "1.5", "--save-dir", str(keep), expect_fail=True)
    assert "--dropout must be in [0.0, 1.0)" in _one_error_line(out.stdout)

    other = tmp_path / "other-bin"
    shutil.copytree(data_bin, other)
    with open(other / "dict.txt", "a") as f:
        f.write("extra-word-1 1\nextra-word-2 1\nextra-word-3 1\nextra-word-4 1\nextra-word-5 1\n"
                "extra-word-6 1\nextra-word-7 1\nextra-word-8 1\nextra-word-9 1\n")
    out = run_cli("fairseq-eval-lm", str(other), "--task", "awd_language_modeling", "--path",
                  str(save / "checkpoint_best.pt"), "--cpu", expect_fail=True)
    assert "dictionary" in _one_error_line(out.stdout)
    out = run_cli("fairseq-train", str(other), *TRAIN, "--save-dir", str(keep), "--max-epoch", "4", expect_fail=True)
    assert "dictionary" in _one_error_line(out.stdout)
    assert (keep / "checkpoint_last.pt").read_bytes() == before


def test_pointer_search_runs_the_network_once_and_matches_the_formula(trained, data_bin, monkeypatch, capsys):
    from fairseq import checkpoint_utils

    from awd_plugins.cli import pointer_search

    save, _ = trained
    ckpt = str(save / "checkpoint_best.pt")
    calls = []
    original = pointer_search.collect_states
    monkeypatch.setattr(pointer_search, "collect_states", lambda *a: calls.append(a[2]) or original(*a))
    window, theta, lam, loss = pointer_search.main([data_bin, "--path", ckpt, "--bptt", "25", "--windows", "10,30",
                                                    "--thetas", "0.5,1", "--lambdas", "0,0.1,0.3", "--cpu"])
    assert calls == ["valid", "test"]  # 12 grid points, one pass per split
    out = capsys.readouterr().out
    assert f"best on valid: --pointer-window {window} --pointer-theta {theta} --pointer-lambda {lam}" in out
    assert len([line for line in out.splitlines() if line.strip().startswith(("10 ", "30 "))]) == 12
    models, _, task = checkpoint_utils.load_model_ensemble_and_task([ckpt], arg_overrides={"data": data_bin})
    task.load_dataset("valid")
    stream = task.dataset("valid").stream
    _, hidden, probs = per_token_loop(models[0].eval(), stream)
    ref = naive_pointer(probs, hidden, stream[1:], window, theta, lam, 25)
    assert abs(ref.double().mean().item() - loss) < 1e-4


def test_fp16_averages_master_weights_and_refreshes_fp16_model(data_bin, tmp_path):
    # --fp16-no-flatten-grads: fairseq's flattened fp16 path is CUDA-only (FAIRSEQ_NOTES §7)
    i = TRAIN.index("--nonmono")
    args = TRAIN[:i] + TRAIN[i + 2 :]
    from conftest import run

    log = run(cli("fairseq-train") + [data_bin, *args, "--nonmono", "5", "--asgd-from-start", "--stop-min-lr", "0",
                                      "--fp16", "--fp16-no-flatten-grads", "--fp16-init-scale", "8",
                                      "--max-epoch", "1", "--save-dir", str(tmp_path), "--user-dir", PLUGIN]).stdout
    assert "validating (and saving) the averaged weights" in log
    state = torch.load(tmp_path / "checkpoint_last.pt", weights_only=True)
    opt = state["last_optimizer_state"]
    params = [v for k, v in state["model"].items() if k != "decoder.output_projection.weight"]
    averaged = [opt["inner"]["state"][i]["ax"] for i in range(len(params))]
    assert all(ax.dtype == torch.float32 for ax in averaged)
    # the fp16 model (saved upcast to fp32) holds the fp32 average rounded to fp16
    assert all(torch.equal(p, ax.half().float()) for p, ax in zip(params, averaged))
