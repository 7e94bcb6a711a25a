"""awd-export (issue #16): the inference step of every architecture as TorchScript / ONNX.

For each architecture (tiny configs) the exported model, run window by window with
its own carried state, must give the log-probabilities of the PyTorch model run the
fairseq way (decoder forward with carried state, then the decoder's normalised
probabilities) to 1e-4, and a batch-1 greedy continuation must be token-identical
to fairseq's incremental decoding. ONNX cases skip without onnx/onnxruntime.
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
from conftest import REPO

V = 40
ARCHS = {
    "awd_lstm": (AwdLstmModel, AwdLstmConfig, dict(emsize=6, nhid=8, nlayers=2, wdrop=0.3, splits="20")),
    "awd_lstm_mos": (AwdLstmModel, AwdLstmConfig, dict(emsize=6, nhid=8, nlayers=2, splits="none", n_experts=3)),
    "mogrifier_lstm": (MogrifierLstmModel, MogrifierLstmConfig, dict(emsize=6, nhid=6, nlayers=2, mogrifier_rounds=3, mogrifier_rank=2)),
    "awd_qrnn": (AwdQrnnModel, AwdQrnnConfig, dict(emsize=6, nhid=8, nlayers=2, wdrop=0.3)),
    "sha_rnn_no_attention": (ShaRnnModel, ShaRnnConfig, dict(emsize=8, nhid=16, nlayers=2, attention_blocks="none")),
    "sru": (SruModel, SruConfig, dict(n_d=8, depth=2)),
    "rnn_lm_lstm": (RnnLmModel, RnnLmConfig, dict(rnn_type="LSTM", emsize=6, nhid=6, nlayers=2)),
    "rnn_lm_gru": (RnnLmModel, RnnLmConfig, dict(rnn_type="GRU", emsize=6, nhid=6, nlayers=2)),
    "rnn_lm_tanh_tied": (RnnLmModel, RnnLmConfig, dict(rnn_type="RNN_TANH", emsize=6, nhid=6, nlayers=1, tied=True)),
}
GROWING_MEMORY = {
    "sha_rnn": (ShaRnnModel, ShaRnnConfig, dict(emsize=8, nhid=16, nlayers=2, memory_len=10)),
    "srupp": (SruppModel, SruppConfig, dict(n_d=8, n_proj=4, depth=2, adaptive_softmax_cutoff="20", n_e=8)),
}


def build(spec):
    model_cls, cfg_cls, kw = spec
    torch.manual_seed(0)
    model = model_cls.build_model(model_cfg(cfg_cls, **kw), SimpleNamespace(target_dictionary=dictionary_of_size(V)))
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


@pytest.mark.parametrize("arch", sorted(GROWING_MEMORY))
def test_growing_attention_memory_is_refused_clearly(arch):
    step = inference.InferenceStep(build(GROWING_MEMORY[arch]), 1)
    with pytest.raises(AwdUserError, match="not implemented: the state .* changes shape"):
        inference.check_fixed_state_shapes(step, 4)


@pytest.fixture(scope="module")
def checkpoint(small_bin, tmp_path_factory):
    from conftest import PLUGIN, cli, run

    save = tmp_path_factory.mktemp("export-ckpt")
    run(cli("fairseq-train") + [
        small_bin, "--user-dir", PLUGIN, "--task", "awd_language_modeling", "--arch", "awd_lstm", "--emsize", "8",
        "--nhid", "8", "--nlayers", "2", "--criterion", "split_cross_entropy", "--optimizer", "sgd", "--lr", "1",
        "--batch-size", "4", "--bptt", "10", "--max-update", "2", "--cpu", "--num-workers", "0", "--seed", "1",
        "--disable-validation", "--save-dir", str(save), "--no-epoch-checkpoints",
    ])
    return str(save / "checkpoint_last.pt")


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
