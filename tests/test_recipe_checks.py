"""The recipe scripts check their inputs before each long step (issue #12 §6): a missing or
incomplete data-bin, or a missing checkpoint to finetune from, stops the script with one line
instead of a fairseq-train that silently trains from scratch. fairseq-train itself is replaced
by a stand-in that only records its calls, so no training runs here."""

import os
import shutil
import subprocess

import pytest
from conftest import REPO

RECIPES = [["awd_lstm.sh", "ptb"], ["awd_qrnn.sh", "wt2"], ["sha_rnn_enwik8.sh"], ["sha_rnn_ptb_char_cpu.sh"],
           ["srupp_enwik8.sh"], ["srupp_lm1b.sh"], ["srupp_wt103.sh"], ["word_language_model.sh", "ptb-650"],
           ["awd_lstm_mos.sh", "ptb"], ["mogrifier_lstm.sh", "wt2"]]


def recipe(args, tmp_path, **env):
    """Run ``examples/<script>`` from the repository root with a stand-in fairseq-train/-eval-lm on PATH."""
    bin_dir = tmp_path / "fake-bin"
    if not bin_dir.exists():
        bin_dir.mkdir()
        for tool in ("fairseq-train", "fairseq-eval-lm", "python"):
            (bin_dir / tool).write_text(f'#!/bin/sh\necho "{tool} $*" >> "{tmp_path}/calls.log"\n')
            (bin_dir / tool).chmod(0o755)
    full_env = dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}", **{k: str(v) for k, v in env.items()})
    proc = subprocess.run(["bash", os.path.join("examples", args[0]), *args[1:]], cwd=REPO, env=full_env,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=60)
    calls = (tmp_path / "calls.log").read_text().splitlines() if (tmp_path / "calls.log").exists() else []
    return proc, calls


@pytest.mark.parametrize("args", RECIPES, ids=lambda a: a[0])
def test_an_incomplete_data_bin_stops_every_recipe(args, tmp_path, small_bin):
    data = tmp_path / "data"
    shutil.copytree(small_bin, data)
    (data / "valid.idx").unlink()  # e.g. a copy that did not finish
    proc, calls = recipe(args, tmp_path, DATA=data, SAVE=tmp_path / "save")
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip() == f"{args[0]}: error: {data} is not a complete data-bin: valid.idx is missing or empty " \
                                  "(prepare it with preprocess/prepare_*.py, or set DATA=)"
    assert calls == []  # nothing was started


@pytest.mark.parametrize("script", ["awd_lstm.sh", "awd_qrnn.sh"])
def test_finetuning_needs_the_checkpoint_of_the_training_step(script, tmp_path, small_bin):
    """The training step 'finished' without a checkpoint_best.pt: finetuning must not start from scratch."""
    save = tmp_path / "save"
    proc, calls = recipe([script, "ptb"], tmp_path, DATA=small_bin, SAVE=save)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == (
        f"{script}: error: checkpoint {save}/checkpoint_best.pt not found or empty: the step that writes it did not "
        "finish (fairseq-train would silently start from scratch)")
    assert len(calls) == 1 and calls[0].startswith("fairseq-train ") and "--restore-file" not in calls[0]


def test_resuming_an_existing_save_dir_is_announced(tmp_path, small_bin):
    save = tmp_path / "save"
    save.mkdir()
    (save / "checkpoint_last.pt").write_bytes(b"x")
    (save / "checkpoint_best.pt").write_bytes(b"x")
    proc, calls = recipe(["awd_lstm.sh", "ptb"], tmp_path, DATA=small_bin, SAVE=save)
    assert proc.returncode == 0, proc.stderr
    assert f"note: {save} already holds checkpoint_last.pt: fairseq-train continues that run" in proc.stderr
    assert [c.split()[0] for c in calls] == ["fairseq-train", "fairseq-train"] + ["fairseq-eval-lm"] * 4
    assert f"--restore-file {save}/checkpoint_best.pt" in calls[1]
