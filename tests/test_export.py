"""awd-export (issue #16): the inference step of every architecture as TorchScript / ONNX.

For each architecture (tiny configs) the exported model, run window by window with
its own carried state, must give the log-probabilities of the PyTorch model run the
fairseq way (decoder forward with carried state, then the decoder's normalised
probabilities) to 1e-4, and a batch-1 greedy continuation must be token-identical
to fairseq's incremental decoding. ONNX cases skip without onnx/onnxruntime.

The attention models (SHA-RNN with attention, SRU++) export with their memories as
fixed-shape state plus a validity count; their memory cap (5) is shorter than the
windows run (3 × 4 tokens), so the memory fills and then slides.
"""

import json
import os
import subprocess
import sys
from types import SimpleNamespace

import pytest
import torch

from _helpers import dictionary_of_size, model_cfg
from awd_plugins import inference
from awd_plugins.errors import AwdUserError
from awd_plugins.models.awd_lstm import AwdLstmConfig, AwdLstmModel
from awd_plugins.models.awd_qrnn import AwdQrnnConfig, AwdQrnnModel
from awd_plugins.models.mogrifier_lstm import MogrifierLstmConfig, MogrifierLstmModel
from awd_plugins.models.rnn_lm import RnnLmConfig, RnnLmModel
from awd_plugins.models.sha_rnn import ShaRnnConfig, ShaRnnModel
from awd_plugins.models.srupp import SruConfig, SruModel, SruppConfig, SruppModel
from awd_plugins.modules.srupp import SRUppAttention
from conftest import REPO

V = 40
ARCHS = {
    "awd_lstm": (AwdLstmModel, AwdLstmConfig, dict(emsize=6, nhid=8, nlayers=2, wdrop=0.3, splits="20")),
    "awd_lstm_mos": (AwdLstmModel, AwdLstmConfig, dict(emsize=6, nhid=8, nlayers=2, splits="none", n_experts=3)),
    "mogrifier_lstm": (MogrifierLstmModel, MogrifierLstmConfig, dict(emsize=6, nhid=6, nlayers=2, mogrifier_rounds=3, mogrifier_rank=2)),
    "awd_qrnn": (AwdQrnnModel, AwdQrnnConfig, dict(emsize=6, nhid=8, nlayers=2, wdrop=0.3)),
    "sha_rnn_no_attention": (ShaRnnModel, ShaRnnConfig, dict(emsize=8, nhid=16, nlayers=2, attention_blocks="none")),
    # attention in block 0 only (block 1 carries an empty memory), and in every block
    "sha_rnn": (ShaRnnModel, ShaRnnConfig, dict(emsize=8, nhid=16, nlayers=2, memory_len=5)),
    "sha_rnn_all_attention": (ShaRnnModel, ShaRnnConfig, dict(emsize=8, nhid=16, nlayers=2, memory_len=5,
                                                              attention_blocks="all")),
    # adaptive input/softmax, 2 heads, attention in layer 1 only (layer 0: projected linear, empty memory)
    "srupp": (SruppModel, SruppConfig, dict(n_d=8, n_proj=4, depth=2, adaptive_softmax_cutoff="20", n_e=8,
                                            attn_heads=2, attn_every=2, eval_memory_len=5)),
    "srupp_full_softmax": (SruppModel, SruppConfig, dict(n_d=8, n_proj=4, depth=2, eval_memory_len=5)),
    "sru": (SruModel, SruConfig, dict(n_d=8, depth=2)),
    "rnn_lm_lstm": (RnnLmModel, RnnLmConfig, dict(rnn_type="LSTM", emsize=6, nhid=6, nlayers=2)),
    "rnn_lm_gru": (RnnLmModel, RnnLmConfig, dict(rnn_type="GRU", emsize=6, nhid=6, nlayers=2)),
    "rnn_lm_tanh_tied": (RnnLmModel, RnnLmConfig, dict(rnn_type="RNN_TANH", emsize=6, nhid=6, nlayers=1, tied=True)),
}
ATTENTION = ("sha_rnn", "sha_rnn_all_attention", "srupp", "srupp_full_softmax")


def build(spec):
    model_cls, cfg_cls, kw = spec
    torch.manual_seed(0)
    model = model_cls.build_model(model_cfg(cfg_cls, **kw), SimpleNamespace(target_dictionary=dictionary_of_size(V)))
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, SRUppAttention):
                m.alpha.fill_(1.0)  # initialised to 0, which would leave the attention out of the output
    return model.eval()


def exported_step(step, fmt, window, tmp_path):
    if fmt == "torchscript":
        out = str(tmp_path / "m.pt")
        inference.export_torchscript(step, window, V, out)
        return torch.jit.load(out)
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    out = str(tmp_path / "m.onnx")
    inference.export_onnx(step, window, V, out)
    return inference.OnnxStep(out, ["tokens", *step.state_names])


@torch.no_grad()
def pytorch_windows(model, tokens, window):
    """The fairseq path: decoder forward with carried state, then normalised log-probs."""
    model.decoder.reset_carried_state()
    out = []
    for pos in range(0, tokens.size(1), window):
        net = model.decoder(tokens[:, pos : pos + window], carry_key="x", carry_pos=pos)
        out.append(model.decoder.get_normalized_probs(net, log_probs=True, sample=None))
    return torch.cat(out, 1)


@torch.no_grad()
def pytorch_greedy(model, first, steps):
    """Batch-1 greedy continuation through fairseq's incremental decoding."""
    incremental, tokens = {}, torch.tensor([[first]])
    for _ in range(steps):
        net = model.decoder(tokens, incremental_state=incremental)
        lp = model.decoder.get_normalized_probs(net, log_probs=True, sample=None)
        tokens = torch.cat([tokens, lp[:, -1].argmax(-1, keepdim=True)], 1)
    return tokens[0].tolist()


@pytest.mark.parametrize("fmt", ["torchscript", "onnx"])
@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_exported_windows_and_greedy_continuation_equal_pytorch(arch, fmt, tmp_path):
    model = build(ARCHS[arch])
    B, T, windows = 2, 4, 3
    step = inference.InferenceStep(model, B)
    inference.check_fixed_state_shapes(step, T)
    exported = exported_step(step, fmt, T, tmp_path)
    tokens = torch.randint(4, V, (B, T * windows), generator=torch.Generator().manual_seed(1))
    ref = pytorch_windows(model, tokens, T)
    state, got = step.initial_state(), []
    for pos in range(0, tokens.size(1), T):
        log_probs, *state = exported(tokens[:, pos : pos + T], *state)
        got.append(log_probs)
    got = torch.cat(got, 1)
    assert got.shape == (B, T * windows, V)
    torch.testing.assert_close(got, ref, atol=1e-4, rtol=0)
    assert torch.allclose(got.exp().sum(-1), torch.ones(B, T * windows), atol=1e-4)  # one distribution per position

    one = inference.InferenceStep(model, 1)
    (tmp_path / "one").mkdir()
    greedy = exported_step(one, fmt, 1, tmp_path / "one")
    state, seq = one.initial_state(), [5]
    for _ in range(12):
        log_probs, *state = greedy(torch.tensor([[seq[-1]]]), *state)
        seq.append(int(log_probs[0, -1].argmax()))
    assert seq == pytorch_greedy(model, 5, 12)


def test_weight_drop_is_resolved_to_the_raw_weights():
    from awd_plugins.modules.weight_drop import WeightDrop

    model = build(ARCHS["awd_lstm"])
    step = inference.InferenceStep(model, 1)
    assert any(isinstance(m, WeightDrop) for m in model.modules())
    assert not any(isinstance(m, WeightDrop) for m in step.modules())
    step.train()  # exporters restore the caller's mode: the step stays in evaluation
    assert not any(m.training for m in step.modules())
    # the same raw weights, under the wrapped module's own names
    raw = sorted(p.detach().flatten().sum().item() for p in model.decoder.parameters())
    assert sorted(p.detach().flatten().sum().item() for p in step.decoder.parameters()) == raw


def test_state_flattening_round_trips_in_a_fixed_order():
    state = [(torch.zeros(1), torch.ones(2)), (torch.full((3,), 2.0), [torch.full((1,), 3.0)])]
    flat, names, structure = inference.flatten_state(state)
    assert names == ["state_0_0", "state_0_1", "state_1_0", "state_1_1_0"]
    assert [t[0].item() for t in flat] == [0, 1, 2, 3]
    back = inference.unflatten_state(flat, structure)
    assert type(back) is list and type(back[0]) is tuple and type(back[1][1]) is list
    assert back[1][1][0] is flat[3]


@pytest.mark.parametrize("arch", ATTENTION)
def test_attention_memory_is_fixed_shape_state_with_a_validity_count(arch):
    model = build(ARCHS[arch])
    B, T, cap = 2, 4, 5
    step = inference.InferenceStep(model, B)
    assert step.memory_len == cap and step.state_names[-1] == "memory_valid"
    state = step.initial_state()
    shapes = {n: list(t.shape) for n, t in zip(step.state_names, state)}
    assert step.memory_names and all(shapes[n] == [cap, B, 8] for n in step.memory_names)
    assert state[-1].dtype == torch.long and shapes["memory_valid"] == [1, B] and not state[-1].any()
    tokens = torch.randint(4, V, (B, T))
    counts = []
    with torch.no_grad():
        for _ in range(3):
            out = step(tokens, *state)
            assert [list(t.shape) for t in out[1:]] == [list(t.shape) for t in state]
            state = list(out[1:])
            counts.append(state[-1].tolist())
    assert counts == [[[4, 4]], [[5, 5]], [[5, 5]]]  # min(cap, valid + T)
    # the model's own state is untouched: training and evaluation keep the growing memory
    assert model.decoder.fixed_memory_len is None
    assert flatten_shapes(model.decoder.init_state(B, model.decoder.embed_tokens.weight)) == [
        [0, B, 8] if n in step.memory_names else shapes[n] for n in step.state_names[:-1]]


def flatten_shapes(state):
    return [list(t.shape) for t in inference.flatten_state(state)[0]]


@pytest.mark.parametrize("arch", ["sha_rnn", "srupp_full_softmax"])
def test_empty_memory_rows_get_no_attention_whatever_they_hold(arch):
    """The rows before the count are ignored (−∞ before the softmax), not just zero."""
    step = inference.InferenceStep(build(ARCHS[arch]), 2)
    tokens = torch.randint(4, V, (2, 4), generator=torch.Generator().manual_seed(3))
    state = step.initial_state()
    noisy = [t.normal_() if n in step.memory_names else t
             for n, t in zip(step.state_names, step.initial_state())]
    with torch.no_grad():
        torch.testing.assert_close(step(tokens, *noisy)[0], step(tokens, *state)[0], atol=0, rtol=0)


@pytest.mark.parametrize("arch", ["sha_rnn", "srupp"])
def test_one_stream_restarts_alone_by_zeroing_its_state_column(arch):
    """model.json's advice: the count is per stream, so zeroing column b restarts stream b only."""
    step = inference.InferenceStep(build(ARCHS[arch]), 2)
    tokens = torch.randint(4, V, (2, 4), generator=torch.Generator().manual_seed(4))
    state = step.initial_state()
    with torch.no_grad():
        for _ in range(2):
            state = list(step(tokens, *state)[1:])
        carried = step(tokens, *state)[0]
        for t in state:
            t[:, 1] = 0
        restarted = step(tokens, *state)[0]
        fresh = step(tokens, *step.initial_state())[0]
    torch.testing.assert_close(restarted[0], carried[0], atol=1e-6, rtol=0)
    torch.testing.assert_close(restarted[1], fresh[1], atol=1e-6, rtol=0)
    assert not torch.allclose(carried[1], fresh[1], atol=1e-3)


def test_memory_len_override_matches_the_model_run_with_that_memory(tmp_path):
    """SRU++ evaluated with the previous window as its memory (--eval-memory-len 0) needs
    --memory-len; with N = the window it is exactly the PyTorch model run in windows of N."""
    _, _, kw = ARCHS["srupp_full_softmax"]
    model = build((SruppModel, SruppConfig, dict(kw, eval_memory_len=0)))
    with pytest.raises(AwdUserError, match=r"pass awd-export --memory-len N") as refused:
        inference.InferenceStep(model, 2)
    assert "\n" not in str(refused.value)
    B, T = 2, 3
    step = inference.InferenceStep(model, B, memory_len=T)
    tokens = torch.randint(4, V, (B, 4 * T), generator=torch.Generator().manual_seed(2))
    state, got = step.initial_state(), []
    with torch.no_grad():
        for pos in range(0, tokens.size(1), T):
            log_probs, *state = step(tokens[:, pos : pos + T], *state)
            got.append(log_probs)
    torch.testing.assert_close(torch.cat(got, 1), pytorch_windows(model, tokens, T), atol=1e-5, rtol=0)


@pytest.mark.parametrize("arch, memory_len", [("awd_lstm", 5), ("sru", 5), ("sha_rnn", 0)])
def test_memory_len_refusals_are_one_line(arch, memory_len):
    with pytest.raises(AwdUserError, match="--memory-len") as refused:
        inference.InferenceStep(build(ARCHS[arch]), 1, memory_len=memory_len)
    assert "\n" not in str(refused.value)


def test_a_state_that_changes_shape_is_still_refused(monkeypatch):
    """check_fixed_state_shapes stays as a guard: a decoder with a growing memory and no
    fixed-shape form (here SHA-RNN without its use_fixed_memory) is refused in one line."""
    from awd_plugins.models.recurrent_lm import RecurrentDecoder
    from awd_plugins.models.sha_rnn import ShaRnnDecoder

    monkeypatch.setattr(ShaRnnDecoder, "use_fixed_memory", RecurrentDecoder.use_fixed_memory)
    step = inference.InferenceStep(build(ARCHS["sha_rnn"]), 1)
    assert step.memory_len is None
    with pytest.raises(AwdUserError, match="not implemented: the state .* changes shape") as refused:
        inference.check_fixed_state_shapes(step, 4)
    assert "\n" not in str(refused.value)


def train_tiny(small_bin, save, *model_args):
    """A two-update fairseq-train run: a real checkpoint to export."""
    from conftest import PLUGIN, cli, run

    run(cli("fairseq-train") + [
        small_bin, "--user-dir", PLUGIN, "--task", "awd_language_modeling", *map(str, model_args),
        "--criterion", "split_cross_entropy", "--optimizer", "sgd", "--lr", "1",
        "--batch-size", "4", "--bptt", "10", "--max-update", "2", "--cpu", "--num-workers", "0", "--seed", "1",
        "--disable-validation", "--save-dir", str(save), "--no-epoch-checkpoints",
    ])
    return str(save / "checkpoint_last.pt")


@pytest.fixture(scope="module")
def checkpoint(small_bin, tmp_path_factory):
    return train_tiny(small_bin, tmp_path_factory.mktemp("export-ckpt"),
                      "--arch", "awd_lstm", "--emsize", 8, "--nhid", 8, "--nlayers", 2)


def export_cli(*args):
    env = dict(os.environ, PYTHONPATH=REPO, PYTHONWARNINGS="ignore", OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", "awd_plugins.cli.export", *map(str, args)], stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, env=env)


@pytest.mark.parametrize("fmt", ["torchscript", "onnx"])
def test_awd_export_command(checkpoint, small_bin, tmp_path, fmt):
    if fmt == "onnx":
        pytest.importorskip("onnxruntime")
    out = tmp_path / ("model.pt" if fmt == "torchscript" else "model.onnx")
    proc = export_cli("--path", checkpoint, "--data", small_bin, "--format", fmt, "--out", out)
    assert proc.returncode == 0, proc.stdout[-3000:]
    meta = json.loads((tmp_path / "model.json").read_text())
    assert [i["name"] for i in meta["inputs"]] == ["tokens", "state_0_0", "state_0_1", "state_1_0", "state_1_1"]
    assert meta["inputs"][0] == {"name": "tokens", "shape": [1, 1], "dtype": "int64"}
    assert meta["outputs"][0]["name"] == "log_probs" and meta["outputs"][0]["shape"] == [1, 1, meta["vocab_size"]]
    assert [o["name"] for o in meta["outputs"][1:]] == ["new_" + i["name"] for i in meta["inputs"][1:]]
    assert len(meta["symbols"]) == meta["vocab_size"] and meta["symbols"][meta["eos"]] == "</s>"
    # an existing output is never overwritten without --force
    before = out.read_bytes()
    proc = export_cli("--path", checkpoint, "--data", small_bin, "--format", fmt, "--out", out)
    assert proc.returncode == 2 and "exists" in proc.stdout and "Traceback" not in proc.stdout
    assert out.read_bytes() == before


def test_awd_export_bad_checkpoint_is_one_error_line(small_bin, tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    proc = export_cli("--path", bad, "--data", small_bin, "--out", tmp_path / "m.pt")
    assert proc.returncode == 2 and "Traceback" not in proc.stdout, proc.stdout[-2000:]
    assert [line for line in proc.stdout.splitlines() if ": error: " in line][0].count("not a readable checkpoint") == 1
    assert not (tmp_path / "m.pt").exists() and not (tmp_path / "m.json").exists()


ATTENTION_TRAIN = {
    "sha_rnn": ["--arch", "sha_rnn", "--emsize", 8, "--nhid", 16, "--nlayers", 2, "--memory-len", 6],
    # --eval-memory-len 0 (the default, the reference's): the memory is the previous evaluation window
    "srupp": ["--arch", "srupp", "--n-d", 8, "--n-proj", 4, "--depth", 2, "--alpha", 0, "--beta", 0],
}


@pytest.mark.parametrize("arch", sorted(ATTENTION_TRAIN))
def test_awd_export_command_with_an_attention_memory(arch, small_bin, tmp_path):
    pytest.importorskip("onnxruntime")
    ckpt = train_tiny(small_bin, tmp_path / "ckpt", *ATTENTION_TRAIN[arch])
    out = tmp_path / "model.onnx"
    common = ["--path", ckpt, "--data", small_bin, "--format", "onnx", "--out", out, "--batch-size", 2, "--window", 2]
    if arch == "srupp":  # the previous window's length is unknown to the export: one line asking for --memory-len
        proc = export_cli(*common)
        assert proc.returncode == 2 and "Traceback" not in proc.stdout, proc.stdout[-2000:]
        assert [line for line in proc.stdout.splitlines() if ": error: " in line][0].count("--memory-len N") == 1
        assert not out.exists()
    proc = export_cli(*common, *(["--memory-len", 6] if arch == "srupp" else []))
    assert proc.returncode == 0, proc.stdout[-3000:]
    meta = json.loads((tmp_path / "model.json").read_text())
    shapes = {i["name"]: i["shape"] for i in meta["inputs"]}
    assert meta["memory_len"] == 6 and meta["attention_memories"]
    assert all(shapes[name] == [6, 2, 8] for name in meta["attention_memories"])
    assert meta["inputs"][-1] == {"name": "memory_valid", "shape": [1, 2], "dtype": "int64"}
    assert meta["outputs"][-1] == {"name": "new_memory_valid", "shape": [1, 2], "dtype": "int64"}
    assert "memory_valid 0" in meta["initial_state"] and "min(memory_len, memory_valid + T)" in meta["memory_valid"]
