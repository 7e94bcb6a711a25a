"""Checkpoints (issue #12 §2–§4, §5 checkpoint files, §6 save-dir traps).

* a checkpoint whose configuration names another package's model or task, or that needs
  pickled code, is refused before anything is built, by every entry point, in one line;
* checkpoint files appear atomically; an unloadable ``checkpoint_last.pt`` is reported and
  the run resumes from the newest checkpoint that loads (or stops), never from scratch;
* a resume from a mid-epoch checkpoint continues the uninterrupted run bit for bit (SGD and
  after the NT-ASGD switch);
* bad checkpoint files and paths: one ``error:`` line, exit 2.
"""

import json
import os
import re
import shutil
import subprocess
import sys

import pytest
import torch

import awd_plugins  # noqa: F401  (registers the task; installs the checkpoint guard)
from awd_plugins import checkpoints
from awd_plugins.errors import AwdUserError
from conftest import PLUGIN, REPO, cli, run

TRAIN = [
    "--task", "awd_language_modeling", "--arch", "awd_lstm", "--emsize", "16", "--nhid", "24", "--nlayers", "2",
    "--criterion", "split_cross_entropy", "--optimizer", "nt_asgd", "--lr-scheduler", "nt_asgd", "--nonmono", "0",
    "--lr", "30", "--clip-norm", "0.25", "--batch-size", "16", "--bptt", "12", "--seed", "1", "--cpu",
    "--log-format", "json", "--log-interval", "1", "--num-workers", "0", "--no-epoch-checkpoints",
    "--max-epoch", "3", "--save-interval-updates", "25", "--user-dir", PLUGIN,
]


def _train(data, save, *extra, expect_fail=False):
    return run(cli("fairseq-train") + [data, *TRAIN, "--save-dir", str(save), *extra], expect_fail=expect_fail).stdout


def _losses(log):
    """num_updates → (loss, total_loss) of every update (--log-interval 1)."""
    out = {}
    for line in log.splitlines():
        if "| train_inner |" in line:
            d = json.loads(line.split("| train_inner |", 1)[1])
            out[int(d["num_updates"])] = (d["loss"], d["total_loss"])
    return out


def _one_error_line(out):
    assert "Traceback" not in out, out[-3000:]
    errors = [line for line in out.splitlines() if ": error: " in line]
    assert len(errors) == 1, out[-3000:]
    return errors[0]


def _same_training_state(a, b):
    a, b = torch.load(a, weights_only=True), torch.load(b, weights_only=True)
    assert a["model"].keys() == b["model"].keys()
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    oa, ob = a["last_optimizer_state"], b["last_optimizer_state"]
    assert oa["mode"] == ob["mode"]
    if oa.get("raw_params") is not None:
        assert all(torch.equal(x, y) for x, y in zip(oa["raw_params"], ob["raw_params"]))
    return oa["mode"]


@pytest.fixture(scope="module")
def data_bin(rising_valid_bin):
    return rising_valid_bin


@pytest.fixture(scope="module")
def uninterrupted(data_bin, tmp_path_factory):
    """3 epochs, a checkpoint every 25 updates; NT-ASGD switches after epoch 2 (nonmono 0, rising validation)."""
    save = tmp_path_factory.mktemp("uninterrupted")
    log = _train(data_bin, save)
    m = re.search(r"NT-ASGD: switching to averaged SGD after epoch (\d+)", log)
    assert m and int(m.group(1)) < 3, log[-3000:]
    return save, log, int(m.group(1))


def _mid_epoch_checkpoints(save):
    found = []
    for name in os.listdir(save):
        m = re.fullmatch(r"checkpoint_(\d+)_(\d+)\.pt", name)
        if m:
            state = torch.load(save / name, weights_only=True)
            if state["extra_state"]["train_iterator"]["iterations_in_epoch"] > 0:
                found.append((int(m.group(1)), int(m.group(2)), save / name))
    return sorted(found)


# -- §4 mid-epoch resume ----------------------------------------------------------------------
def test_mid_epoch_resume_is_exact_before_and_after_the_asgd_switch(uninterrupted, data_bin, tmp_path):
    save, log, switch = uninterrupted
    mids = _mid_epoch_checkpoints(save)
    sgd = next(c for c in mids if c[0] <= switch)  # mid-epoch, plain SGD
    asgd = next(c for c in mids if c[0] > switch)  # mid-epoch, after the switch to averaging
    reference = _losses(log)
    for epoch, updates, ckpt in (sgd, asgd):
        # kill -9 right after this checkpoint, then the same command again
        resumed_dir = tmp_path / f"resume_{updates}"
        resumed_dir.mkdir()
        shutil.copy(ckpt, resumed_dir / "checkpoint_last.pt")
        resumed = _train(data_bin, resumed_dir)
        assert "already holds a run: resuming it" in resumed  # §6: the resume is announced
        assert "carried training state restored" in resumed
        assert "started with other options" not in resumed  # same command, no notice
        after = _losses(resumed)
        assert min(after) == updates + 1 and max(after) == max(reference)
        assert all(after[u] == reference[u] for u in after), [(u, after[u], reference[u]) for u in after
                                                               if after[u] != reference[u]][:3]
        mode = _same_training_state(save / "checkpoint_last.pt", resumed_dir / "checkpoint_last.pt")
        assert mode == "asgd"


def test_carried_state_is_what_the_checkpoint_holds(uninterrupted):
    import numpy as np

    from awd_plugins.data.stream_dataset import training_windows

    save, _, _ = uninterrupted
    epoch, _, ckpt = _mid_epoch_checkpoints(save)[0]
    state = torch.load(ckpt, weights_only=True)
    carried = state["extra_state"]["AwdLanguageModelingTask"]["carried_state"]
    assert carried["world_size"] == 1 and carried["epoch"] == epoch
    rank0 = carried["ranks"][0]
    h, c = rank0["state"][0]  # first LSTM layer: (1, B, nhid)
    assert rank0["bsz"] == 16 and h.shape == (1, 16, 24) and c.shape == (1, 16, 24)
    # the saved state leaves the last trained window, whose end is where the resumed iterator starts
    rng = np.random.RandomState(1 if epoch == 1 else [1, epoch])  # the task's draw (--seed 1)
    it = state["extra_state"]["train_iterator"]["iterations_in_epoch"]
    starts = [start for start, _ in training_windows(10**6, 12, rng)[: it + 1]]
    assert rank0["pos"] == starts[it - 1] and rank0["pos"] + rank0["length"] == starts[it]


# -- §3 atomic checkpoint files, unloadable checkpoint_last.pt --------------------------------
def test_checkpoint_copies_replace_the_destination_atomically(tmp_path, monkeypatch):
    from fairseq import checkpoint_utils

    src, dst = tmp_path / "checkpoint_3_300.pt", tmp_path / "checkpoint_best.pt"
    src.write_bytes(b"new" * 1000)
    dst.write_bytes(b"previous best")
    # a kill inside the copy (here: before the data reaches the disk) leaves the old file whole
    monkeypatch.setattr(os, "fsync", lambda fd: (_ for _ in ()).throw(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        checkpoint_utils.PathManager.copy(str(src), str(dst), overwrite=True)
    assert dst.read_bytes() == b"previous best"
    assert sorted(os.listdir(tmp_path)) == ["checkpoint_3_300.pt", "checkpoint_best.pt"]  # no temp left
    monkeypatch.undo()
    assert checkpoint_utils.PathManager.copy(str(src), str(dst), overwrite=True)
    assert dst.read_bytes() == src.read_bytes()


def test_unloadable_last_checkpoint_resumes_from_the_newest_that_loads(uninterrupted, data_bin, tmp_path):
    save, _, _ = uninterrupted
    epoch, updates, newest = _mid_epoch_checkpoints(save)[-1]
    older = _mid_epoch_checkpoints(save)[-2][2]
    shutil.copy(older, tmp_path / older.name)
    shutil.copy(newest, tmp_path / newest.name)
    os.utime(tmp_path / older.name, (1, 1))  # the older file is older
    (tmp_path / "checkpoint_last.pt").write_bytes(b"")  # killed while being written
    out = _train(data_bin, tmp_path)
    line = next(line for line in out.splitlines() if "does not load" in line)
    assert "empty file" in line and f"resuming from {tmp_path / newest.name}" in line
    assert min(_losses(out)) == updates + 1
    _same_training_state(save / "checkpoint_last.pt", tmp_path / "checkpoint_last.pt")


def test_no_loadable_checkpoint_stops_with_one_line(data_bin, tmp_path):
    (tmp_path / "checkpoint_last.pt").write_bytes(b"")
    (tmp_path / "checkpoint_1_25.pt").write_bytes(b"PK\x03\x04 truncated")
    out = _train(data_bin, tmp_path, expect_fail=True)
    assert "and no other checkpoint" in _one_error_line(out) and "train_inner" not in out
    assert (tmp_path / "checkpoint_last.pt").read_bytes() == b""  # nothing overwritten


# -- §2 code run from a checkpoint of dicts and strings -------------------------------------
def _payload(tmp_path, real, name, mark, *, model=None, task=None, reduce=False, data=None):
    """A copy of the real checkpoint ``real`` whose stored configuration names ``model`` / ``task``."""
    state = torch.load(real, weights_only=True)
    code = f"__import__('pathlib').Path({str(mark)!r}).touch() or [(1, 4)]"
    if model == "transformer_lm":
        state["cfg"]["model"] = {"_name": "transformer_lm", "character_embeddings": True,
                                 "character_filters": code, "decoder_embed_dim": 16, "add_bos_token": False,
                                 "tokens_per_sample": 16, "max_target_positions": 16, "tpu": False}
    if task is not None:
        state["cfg"]["task"] = {"_name": task, "data": data, "tokens_per_sample": 16}
    if reduce:
        state["extra_state"]["gadget"] = _Gadget(str(mark))
    path = tmp_path / name
    torch.save(state, path)
    return path


class _Gadget:
    def __init__(self, mark):
        self.mark = mark

    def __reduce__(self):  # unpickling would create the mark file
        return (open, (self.mark, "w"))


@pytest.fixture
def payloads(uninterrupted, data_bin, tmp_path):
    real = uninterrupted[0] / "checkpoint_last.pt"
    mark = tmp_path / "pwned"
    return {
        "model": _payload(tmp_path, real, "model_route.pt", mark, model="transformer_lm"),
        "task": _payload(tmp_path, real, "task_route.pt", mark, model="transformer_lm", task="language_modeling",
                         data=data_bin),
        "task_only": _payload(tmp_path, real, "task_only.pt", mark, task="language_modeling", data=data_bin),
        "reduce": _payload(tmp_path, real, "reduce.pt", mark, reduce=True),
        "mark": mark,
        "real": real,
    }


def test_payloads_are_live_without_the_guard(payloads, data_bin, monkeypatch):
    """The crafted configuration really runs its code once the user explicitly trusts the names."""
    from fairseq import checkpoint_utils

    monkeypatch.setenv(checkpoints.TRUST_ENV, "transformer_lm")
    try:
        checkpoint_utils.load_model_ensemble_and_task([str(payloads["model"])], arg_overrides={"data": data_bin})
    except Exception:
        pass  # whatever fairseq does after building the embedder, the code has already run
    assert payloads["mark"].exists()


def test_payloads_refused_in_process(payloads, data_bin):
    from fairseq import checkpoint_utils
    from awd_plugins.models.awd_lstm import AwdLstmModel

    expected = {"model": "model architecture 'transformer_lm'", "task": "'transformer_lm'",
                "task_only": "task 'language_modeling'", "reduce": "pickled code"}
    for kind, words in expected.items():
        path = str(payloads[kind])
        for load in (
            lambda: checkpoint_utils.load_model_ensemble_and_task([path], arg_overrides={"data": data_bin}),
            lambda: checkpoint_utils.load_checkpoint_to_cpu(path),  # the trainer's --restore-file route
            lambda: AwdLstmModel.from_pretrained(os.path.dirname(path), os.path.basename(path),
                                                 data_name_or_path=data_bin),
        ):
            with pytest.raises(AwdUserError) as err:
                load()
            assert words in str(err.value) and "\n" not in str(err.value)
    assert not payloads["mark"].exists()
    # the real checkpoint keeps loading, and through the hub too
    models, _, task = checkpoint_utils.load_model_ensemble_and_task([str(payloads["real"])],
                                                                     arg_overrides={"data": data_bin})
    assert type(models[0]).__name__ == "AwdLstmModel"
    hub = AwdLstmModel.from_pretrained(str(payloads["real"].parent), "checkpoint_last.pt", data_name_or_path=data_bin)
    assert hub.models[0].decoder.embed_tokens.weight.shape[1] == 16


def _cli_out(cmd, stdin=None):
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, input=stdin, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                          cwd=REPO, timeout=600)
    return proc.returncode, proc.stdout


def _pointer_search(data, path):
    return [sys.executable, "-m", "awd_plugins.cli.pointer_search", data, "--path", str(path), "--cpu",
            "--bptt", "50", "--windows", "10", "--thetas", "1", "--lambdas", "0.1"]


def test_every_entry_point_refuses_payloads_in_one_line(payloads, data_bin, tmp_path):
    lm = ["--task", "awd_language_modeling", "--cpu", "--user-dir", PLUGIN]
    probes = [
        (cli("fairseq-eval-lm") + [data_bin, *lm, "--path", str(payloads["model"])], None, "transformer_lm"),
        (cli("fairseq-interactive") + [data_bin, *lm, "--path", str(payloads["task"]), "--beam", "1"], "the\n",
         "transformer_lm"),
        (cli("fairseq-generate") + [data_bin, *lm, "--path", str(payloads["reduce"]), "--beam", "1"], None,
         "pickled code"),
        (cli("fairseq-train") + [data_bin, *TRAIN, "--save-dir", str(tmp_path / "s1"), "--restore-file",
                                 str(payloads["task_only"])], None, "language_modeling"),
        (cli("fairseq-train") + [data_bin, *TRAIN, "--save-dir", str(tmp_path / "s2"), "--finetune-from-model",
                                 str(payloads["model"])], None, "transformer_lm"),
        (_pointer_search(data_bin, payloads["task"]), None, "transformer_lm"),
    ]
    for cmd, stdin, words in probes:
        rc, out = _cli_out(cmd, stdin)
        assert rc == 2 and words in _one_error_line(out), (cmd, out[-2000:])
        assert not payloads["mark"].exists(), cmd
        assert "train_inner" not in out


# -- §5 checkpoint files, §6 restore-file -----------------------------------------------------
def test_bad_checkpoint_files_one_line(uninterrupted, data_bin, tmp_path):
    real = uninterrupted[0] / "checkpoint_last.pt"
    empty, truncated, text = tmp_path / "empty.pt", tmp_path / "truncated.pt", tmp_path / "notes.pt"
    empty.write_bytes(b"")
    truncated.write_bytes(real.read_bytes()[:5000])
    text.write_text("these are my notes\n")
    for path, words in ((empty, "empty file"), (truncated, "not a readable checkpoint"),
                        (text, "not a readable checkpoint"), (tmp_path / "missing.pt", "no such checkpoint")):
        with pytest.raises(AwdUserError, match=words):
            _load_any(path)
    lm = ["--task", "awd_language_modeling", "--cpu", "--user-dir", PLUGIN]
    bigger = [a if a != "24" else "32" for a in TRAIN]  # --nhid 32: another size
    probes = [
        (cli("fairseq-eval-lm") + [data_bin, *lm, "--path", str(empty)], "empty file"),
        (cli("fairseq-eval-lm") + [data_bin, *lm], "--path"),
        (_pointer_search(data_bin, text), "not a readable checkpoint"),
        (cli("fairseq-train") + [data_bin, *TRAIN, "--save-dir", str(tmp_path / "t1"), "--restore-file",
                                 str(truncated)], "not a readable checkpoint"),
        (cli("fairseq-train") + [data_bin, *TRAIN, "--save-dir", str(tmp_path / "t2"), "--restore-file",
                                 str(tmp_path / "chekpoint_best.pt")], "would silently train from scratch"),
        (cli("fairseq-train") + [data_bin, *bigger, "--save-dir", str(tmp_path / "t3"), "--restore-file",
                                 str(real)], "do not fit"),
    ]
    for cmd, words in probes:
        rc, out = _cli_out(cmd)
        assert rc == 2 and words in _one_error_line(out), (cmd, out[-2000:])
        assert "train_inner" not in out
    assert not any((tmp_path / d).exists() and os.listdir(tmp_path / d) for d in ("t1", "t2", "t3"))


def _load_any(path):
    from fairseq import checkpoint_utils

    if not os.path.exists(path):
        return checkpoint_utils.load_model_ensemble_and_task([str(path)])
    return checkpoint_utils.load_checkpoint_to_cpu(str(path))


def test_torch_files_that_are_not_checkpoints_refused(tmp_path, uninterrupted):
    from fairseq import checkpoint_utils

    real = torch.load(uninterrupted[0] / "checkpoint_last.pt", weights_only=True)
    cases = {
        "list.pt": ([torch.zeros(2)], "holds a list"),
        "weights_only.pt": ({"decoder.embed_tokens.weight": torch.zeros(2, 2)}, "no model weights"),
        "no_config.pt": ({"model": real["model"]}, "neither 'args' nor 'cfg'"),
        "no_arch.pt": ({**real, "cfg": {**real["cfg"], "model": {"emsize": 16}}}, "model architecture None"),
        "bpe.pt": ({**real, "cfg": {**real["cfg"], "bpe": {"_name": "gpt2", "gpt2_encoder_json": "http://x/e.json"}}},
                   "bpe/tokenizer 'gpt2'"),
    }
    torch.save({**real, "cfg": {**real["cfg"], "tokenizer": {"_name": "moses"}}}, tmp_path / "moses.pt")
    assert checkpoint_utils.load_checkpoint_to_cpu(str(tmp_path / "moses.pt"))["cfg"]["tokenizer"]["_name"] == "moses"
    for name, (obj, words) in cases.items():
        torch.save(obj, tmp_path / name)
        with pytest.raises(AwdUserError, match=re.escape(words)):
            checkpoint_utils.load_checkpoint_to_cpu(str(tmp_path / name))


def _tiny_decoders():
    from _helpers import dictionary_of_size, model_cfg
    from awd_plugins.models.awd_lstm import AwdLstmConfig, AwdLstmDecoder
    from awd_plugins.models.awd_qrnn import AwdQrnnConfig, AwdQrnnDecoder
    from awd_plugins.models.sha_rnn import ShaRnnConfig, ShaRnnDecoder
    from awd_plugins.models.srupp import SruDecoder, SruppConfig

    yield AwdLstmDecoder(model_cfg(AwdLstmConfig, emsize=8, nhid=12, nlayers=2), dictionary_of_size(30))
    yield AwdQrnnDecoder(model_cfg(AwdQrnnConfig, emsize=6, nhid=10, nlayers=3), dictionary_of_size(30))
    yield ShaRnnDecoder(ShaRnnConfig(emsize=8, nhid=24, nlayers=3), dictionary_of_size(30))
    yield SruDecoder(model_cfg(SruppConfig, n_d=12, n_proj=6, depth=3, attn_every=2), dictionary_of_size(30),
                     attention=True)


def test_carried_state_round_trip_through_a_checkpoint_for_every_architecture(tmp_path):
    """Window 2 after a save/load of the state carried out of window 1 = window 2 carried in memory."""
    import copy
    from types import SimpleNamespace

    from awd_plugins.carried_state import CarriedTrainingState

    torch.manual_seed(0)
    tokens = torch.randint(4, 30, (3, 14))
    for decoder in _tiny_decoders():
        decoder.eval()
        fresh = copy.deepcopy(decoder)
        decoder(tokens[:, :6], carry_key="train", carry_pos=0)
        continued, _ = decoder(tokens[:, 6:], carry_key="train", carry_pos=6)

        saving = CarriedTrainingState("train")
        saving.begin_epoch(2, SimpleNamespace(decoder=decoder))
        decoder(tokens[:, :6], carry_key="train", carry_pos=0)  # window 1 again: its state is what is saved
        torch.save(saving.state_for_checkpoint(end_of_epoch=False), tmp_path / "carry.pt")

        loading = CarriedTrainingState("train")
        loading.load_from_checkpoint(torch.load(tmp_path / "carry.pt", weights_only=True))
        loading.begin_epoch(2, SimpleNamespace(decoder=fresh))
        resumed, _ = fresh(tokens[:, 6:], carry_key="train", carry_pos=6)
        assert torch.equal(resumed, continued), type(decoder).__name__
        from_zeros, _ = copy.deepcopy(decoder)(tokens[:, 6:], carry_key="other", carry_pos=6)
        assert not torch.equal(resumed, from_zeros)  # the carried state matters

        other_epoch = CarriedTrainingState("train")  # saved in epoch 2, resumed into epoch 3: not used
        other_epoch.load_from_checkpoint(torch.load(tmp_path / "carry.pt", weights_only=True))
        again = copy.deepcopy(decoder)
        again.reset_carried_state()
        other_epoch.begin_epoch(3, SimpleNamespace(decoder=again))
        assert again.export_carried_state("train") is None


def test_resuming_with_other_options_is_reported(uninterrupted):
    import copy

    saved = torch.load(uninterrupted[0] / "checkpoint_last.pt", weights_only=True)["cfg"]
    current = copy.deepcopy(saved)
    assert checkpoints.changed_options(saved, current) == []
    current["model"]["dropout"] = 0.1
    current["optimization"]["lr"] = [20.0]
    current["optimization"]["max_epoch"] = 40  # training longer is an ordinary resume
    changed = checkpoints.changed_options(saved, current)
    assert changed == [f"model.dropout: {saved['model']['dropout']!r} -> 0.1", "optimization.lr: [30.0] -> [20.0]"]


def test_kill_9_during_training_then_the_same_command(uninterrupted, data_bin, tmp_path):
    """SIGKILL while the run is saving (as soon as its second checkpoint starts to appear), then the
    same command: the final weights and optimizer state are the uninterrupted run's, bit for bit."""
    import signal
    import time

    save, log, _ = uninterrupted
    cmd = cli("fairseq-train") + [data_bin, *TRAIN, "--save-dir", str(tmp_path)]
    # the thread count of run(), as the uninterrupted run: GEMM bits can depend on it (they do on a Zen 3)
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "2", "OMP_WAIT_POLICY": "PASSIVE"}
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    deadline = time.time() + 300
    while proc.poll() is None and time.time() < deadline:
        if any(name.startswith("checkpoint_1_50") for name in os.listdir(tmp_path)):
            break
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    out = run(cmd).stdout
    after = _losses(out)
    reference = _losses(log)
    assert after and all(after[u] == reference[u] for u in after)
    _same_training_state(save / "checkpoint_last.pt", tmp_path / "checkpoint_last.pt")


def test_no_path_is_one_line_for_interactive():
    """fairseq-interactive splits a missing --path (None) before loading anything."""
    from fairseq import utils

    with pytest.raises(AwdUserError, match="--path"):
        utils.split_paths(None)
    assert utils.split_paths("a.pt" + os.pathsep + "b.pt") == ["a.pt", "b.pt"]
