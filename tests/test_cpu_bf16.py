"""--cpu-bf16 / --gpu-bf16: bf16 autocast on the CPU and on CUDA (awd_plugins/autocast.py, modules/lstm.py)."""

import copy
from itertools import islice

import pytest
import torch

from awd_plugins import autocast
from awd_plugins.autocast import bf16_autocast, cpu_bf16_autocast_active
from awd_plugins.modules import lstm as lstm_module
from awd_plugins.modules.lstm import AutocastLSTM
from awd_plugins.modules.qrnn import QRNNLayer

from conftest import PLUGIN

BF16 = lambda: torch.autocast("cpu", dtype=torch.bfloat16)  # noqa: E731


def reference_lstm(x, w_ih, w_hh, b_ih, b_hh, h, c):
    """The LSTM equations step by step in fp32 (gates i | f | g | o, as torch.nn.LSTM)."""
    out = []
    for t in range(x.size(0)):
        i, f, g, o = (x[t] @ w_ih.t() + b_ih + h @ w_hh.t() + b_hh).chunk(4, dim=1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        out.append(h)
    return torch.stack(out), c


def lstm_case(seed=0, T=9, B=3, D=12, H=10):
    torch.manual_seed(seed)
    lstm = AutocastLSTM(D, H)
    x = torch.randn(T, B, D, requires_grad=True)
    h0 = (0.5 * torch.randn(1, B, H)).requires_grad_()
    c0 = (0.5 * torch.randn(1, B, H)).requires_grad_()
    weights = torch.randn(T, B, H)  # a loss that weighs every output differently
    return lstm, x, h0, c0, weights


def grads_of(loss, tensors):
    return torch.autograd.grad(loss, tensors)


def test_autocast_lstm_bf16_path_matches_the_equations_forward_and_backward():
    lstm, x, h0, c0, weights = lstm_case()
    params = [lstm.weight_ih_l0, lstm.weight_hh_l0, lstm.bias_ih_l0, lstm.bias_hh_l0]
    ref_h, ref_c = reference_lstm(x, *params, h0[0], c0[0])
    ref_loss = (ref_h * weights).sum() + (ref_c * weights[0]).sum()
    ref_grads = grads_of(ref_loss, [x, h0, c0] + params)
    with BF16():
        h, (h_last, c_last) = lstm(x, (h0, c0))
    assert h.dtype == torch.float32 and c_last.dtype == torch.float32  # cell state and outputs stay fp32
    assert torch.equal(h_last[0], h[-1])
    loss = (h * weights).sum() + (c_last[0] * weights[0]).sum()
    got = grads_of(loss, [x, h0, c0] + params)
    # bf16 products: 8-bit mantissas, so agreement to about 1% of the scale, not 1e-6
    torch.testing.assert_close(h, ref_h, atol=2e-2, rtol=0)
    torch.testing.assert_close(c_last[0], ref_c, atol=2e-2, rtol=0)
    for name, g, r in zip(["x", "h0", "c0", "w_ih", "w_hh", "b_ih", "b_hh"], got, ref_grads):
        scale = r.abs().max()
        assert (g - r).abs().max() <= 2e-2 * scale, name
        assert torch.nn.functional.cosine_similarity(g.flatten(), r.flatten(), dim=0) > 0.999, name


def test_autocast_lstm_is_nn_lstm_without_autocast(monkeypatch):
    lstm, x, h0, c0, _ = lstm_case(seed=1)
    plain = torch.nn.LSTM(12, 10)
    plain.load_state_dict(lstm.state_dict())  # same parameter names
    a, (ha, ca) = lstm(x, (h0, c0))
    b, (hb, cb) = plain(x, (h0, c0))
    assert torch.equal(a, b) and torch.equal(ca, cb)  # training: nn.LSTM itself
    with torch.no_grad():
        b, (hb, cb) = plain(x, (h0, c0))
    # evaluation: the faster of oneDNN's two kernels on this CPU; both agree and keep no graph
    assert lstm_module.EVAL_KERNEL == lstm_module.default_eval_kernel() in ("training", "inference")
    for kernel in ("training", "inference"):
        monkeypatch.setattr(lstm_module, "EVAL_KERNEL", kernel)
        with torch.no_grad():
            a, (ha, ca) = lstm(x, (h0, c0))
        assert not (a.requires_grad or ha.requires_grad or ca.requires_grad)
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-6)
        torch.testing.assert_close(ca, cb, atol=1e-6, rtol=1e-6)
    assert not cpu_bf16_autocast_active(x)
    with bf16_autocast(None):
        assert not cpu_bf16_autocast_active(x)
    with bf16_autocast("cpu"):
        assert cpu_bf16_autocast_active(x)


def test_weight_drop_substitutes_the_masked_weight_in_the_bf16_path():
    from awd_plugins.modules import WeightDrop

    lstm, x, h0, c0, _ = lstm_case(seed=2)
    wd = WeightDrop(lstm, ["weight_hh_l0"], 0.5).train()
    torch.manual_seed(5)
    with BF16():
        h, _ = wd(x, (h0, c0))
    torch.manual_seed(5)
    keep = torch.rand_like(lstm.weight_hh_l0) >= 0.5  # under --cpu-bf16 the mask comes from torch.rand
    masked = lstm.weight_hh_l0 * keep / 0.5
    ref_h, _ = reference_lstm(x, lstm.weight_ih_l0, masked, lstm.bias_ih_l0, lstm.bias_hh_l0, h0[0], c0[0])
    torch.testing.assert_close(h, ref_h, atol=2e-2, rtol=0)
    h.sum().backward()
    grad = lstm.weight_hh_l0.grad
    assert grad.dtype == torch.float32
    assert torch.all(grad[~keep] == 0) and (grad[keep] != 0).float().mean() > 0.9


def test_bf16_weight_drop_mask_has_the_dropout_rate_and_scale():
    from awd_plugins.modules import WeightDrop

    torch.manual_seed(0)
    lin = torch.nn.Linear(400, 500, bias=False)
    with torch.no_grad():
        lin.weight.fill_(1.0)
    wd = WeightDrop(lin, ["weight"], 0.3).train()
    with BF16():
        masked = wd._drop(lin.weight)
    values = masked.unique().tolist()
    assert len(values) == 2 and values[0] == 0.0 and values[1] == pytest.approx(1 / 0.7)
    assert (masked == 0).float().mean().item() == pytest.approx(0.3, abs=0.005)  # 200k draws


def test_qrnn_layer_under_bf16_keeps_the_recurrence_in_fp32():
    torch.manual_seed(3)
    layer = QRNNLayer(12, 10, window=2).eval()
    x = torch.randn(7, 3, 12)
    with torch.no_grad():
        ref_h, ref_c = layer(x)
        with BF16():
            h, c = layer(x)
    assert h.dtype == torch.float32 and c.dtype == torch.float32
    torch.testing.assert_close(h, ref_h, atol=2e-2, rtol=0)
    torch.testing.assert_close(c, ref_c, atol=2e-2, rtol=0)


ARCHS = {
    "awd_lstm": ["--emsize", "16", "--nhid", "24", "--nlayers", "2"],
    "awd_qrnn": ["--emsize", "16", "--nhid", "24", "--nlayers", "2"],
    "rnn_lm": ["--emsize", "16", "--nhid", "16"],
    "sha_rnn": ["--emsize", "16", "--nhid", "32", "--nlayers", "2", "--memory-len", "20"],
    "sru": ["--n-d", "16", "--depth", "2"],
    "srupp": ["--n-d", "16", "--n-proj", "8", "--depth", "2", "--memory-len", "20"],
}


def build(ptb_slice_bin, arch, bf16):
    from fairseq import options, tasks
    from fairseq.dataclass.utils import convert_namespace_to_omegaconf

    argv = [ptb_slice_bin, "--user-dir", PLUGIN, "--task", "awd_language_modeling", "--arch", arch, *ARCHS[arch],
            "--criterion", "split_cross_entropy", "--optimizer", "nt_asgd", "--lr-scheduler", "nt_asgd",
            "--lr", "1", "--clip-norm", "0.25", "--batch-size", "4", "--bptt", "12", "--fixed-bptt",
            "--cpu", "--seed", "1"] + (["--cpu-bf16"] if bf16 else [])
    cfg = convert_namespace_to_omegaconf(options.parse_args_and_arch(options.get_training_parser(), argv))
    task = tasks.setup_task(cfg.task)
    for split in ("train", "valid"):
        task.load_dataset(split)
    torch.manual_seed(1)
    return cfg, task, task.build_model(cfg.model), task.build_criterion(cfg.criterion)


@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_every_architecture_trains_and_validates_with_cpu_bf16(ptb_slice_bin, arch):
    from fairseq.trainer import Trainer

    cfg, task, model, criterion = build(ptb_slice_bin, arch, bf16=True)
    assert model.decoder.bf16_autocast == "cpu"
    fp32 = copy.deepcopy(model)
    fp32.decoder.bf16_autocast = None
    sample = next(task.get_batch_iterator(task.dataset("valid")).next_epoch_itr(shuffle=False))
    model.eval(), fp32.eval()
    with torch.no_grad():
        losses = [criterion(m, sample)[2]["loss"].item() / sample["ntokens"] for m in (model, fp32)]
    assert losses[0] == pytest.approx(losses[1], rel=2e-2)  # the same model, bf16 products

    trainer = Trainer(cfg, task, model, criterion)
    itr = trainer.get_train_iterator(epoch=1).next_epoch_itr(shuffle=False)
    trainer.begin_epoch(1)
    for s in islice(itr, 3):
        trainer.train_step([s])
    assert trainer.get_num_updates() == 3
    for name, p in model.named_parameters():
        assert p.dtype == torch.float32, name  # fp32 master weights
        assert torch.isfinite(p).all(), name
    assert any(not torch.equal(p, q) for p, q in zip(model.parameters(), fp32.parameters()))
    stats = trainer.valid_step(sample)
    assert stats["loss"] > 0 and stats["loss"] == stats["loss"]


def test_cli_train_and_eval_lm_with_cpu_bf16_and_errors(ptb_slice_bin, run_cli, tmp_path):
    save = tmp_path / "ckpt"
    out = run_cli(
        "fairseq-train", ptb_slice_bin, "--task", "awd_language_modeling", "--arch", "awd_lstm",
        "--emsize", "16", "--nhid", "16", "--nlayers", "2", "--criterion", "split_cross_entropy",
        "--optimizer", "nt_asgd", "--lr-scheduler", "nt_asgd", "--lr", "30", "--clip-norm", "0.25",
        "--batch-size", "8", "--bptt", "10", "--max-update", "6", "--cpu", "--num-workers", "0", "--seed", "1",
        "--cpu-bf16", "--log-format", "simple", "--save-dir", save, "--no-epoch-checkpoints",
    ).stdout
    assert "--cpu-bf16: bf16 autocast" in out
    ckpt = save / "checkpoint_last.pt"
    state = torch.load(ckpt, weights_only=False)
    assert all(v.dtype == torch.float32 for v in state["model"].values() if v.is_floating_point())
    evals = run_cli("fairseq-eval-lm", ptb_slice_bin, "--task", "awd_language_modeling", "--path", ckpt,
                    "--gen-subset", "valid", "--batch-size", "10", "--cpu", "--num-workers", "0",
                    "--cpu-bf16", "--pointer-window", "20").stdout
    assert "Perplexity" in evals

    bad = run_cli("fairseq-train", ptb_slice_bin, "--task", "awd_language_modeling", "--arch", "awd_lstm",
                  "--emsize", "16", "--nhid", "16", "--nlayers", "2", "--batch-size", "8", "--cpu",
                  "--fp16", "--fp16-no-flatten-grads", "--cpu-bf16", "--max-update", "1", "--no-save",
                  expect_fail=True)
    assert bad.returncode == 2
    errors = [line for line in bad.stdout.splitlines() if "error:" in line]
    assert errors and "--cpu-bf16 replaces --fp16/--bf16/--amp" in errors[-1]
    assert "Traceback" not in bad.stdout


# -- --gpu-bf16 (no GPU here: the switch's wiring and its user errors) ----------------------------------------
class RecordingAutocast:
    """Stands in for torch.autocast: records each (device, dtype) the decoder enters."""

    entered = []

    def __init__(self, device_type, dtype=None, enabled=True):
        self.key = (device_type, dtype, enabled)

    def __enter__(self):
        RecordingAutocast.entered.append(self.key)

    def __exit__(self, *exc):
        return False


def test_gpu_bf16_runs_forward_output_layer_and_nll_under_cuda_bf16_autocast(ptb_slice_bin, monkeypatch):
    cfg, task, model, criterion = build(ptb_slice_bin, "awd_lstm", bf16=False)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    autocast.enable_bf16_autocast(model, "cuda", on_gpu=True)
    assert model.decoder.bf16_autocast == "cuda"
    sample = next(task.get_batch_iterator(task.dataset("valid")).next_epoch_itr(shuffle=False))
    RecordingAutocast.entered = []
    monkeypatch.setattr(autocast.torch, "autocast", RecordingAutocast)
    model.eval()
    with torch.no_grad():
        criterion(model, sample)  # the split criterion: decoder forward, then nll through the split softmax
        model.decoder.output_layer(torch.zeros(1, 1, model.decoder.embed_tokens.embedding_dim))
    assert RecordingAutocast.entered == [("cuda", torch.bfloat16, True)] * 3


def test_library_rnns_run_in_fp32_under_bf16_autocast():
    # oneDNN's bf16 RNN is slower than fp32 (Zen 4) or missing (CPUs without native bf16); cuDNN's is fp16
    torch.manual_seed(0)
    gru, x, h = torch.nn.GRU(5, 4, 2), torch.randn(3, 2, 5), torch.randn(2, 2, 4)
    ref = gru(x, h)
    with BF16():
        got = autocast.fused_rnn_outside_bf16(gru, x.bfloat16(), h)
    assert got[0].dtype == torch.float32
    torch.testing.assert_close(got[0], gru(x.bfloat16().float(), h)[0], atol=0, rtol=0)
    assert torch.equal(autocast.fused_rnn_outside_bf16(gru, x, h)[0], ref[0])  # no autocast: the plain call


@pytest.mark.parametrize("kwargs,message", [
    (dict(on_gpu=False), "--gpu-bf16 needs a CUDA GPU"),
    (dict(on_gpu=True, amp=True), "--gpu-bf16 replaces --fp16/--bf16/--amp"),
    (dict(on_gpu=True, fp16=True), "--gpu-bf16 replaces --fp16/--bf16/--amp"),
    (dict(on_gpu=True, supported=False), "has no native bf16"),
])
def test_gpu_bf16_user_errors(kwargs, message, monkeypatch):
    from awd_plugins.errors import AwdUserError

    supported = kwargs.pop("supported", True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: supported)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a, **k: "Tesla V100")
    model = torch.nn.Module()
    model.decoder = torch.nn.Module()
    model.decoder.bf16_autocast = None
    with pytest.raises(AwdUserError, match=message):
        autocast.enable_bf16_autocast(model, "cuda", **kwargs)
    assert model.decoder.bf16_autocast is None


def test_gpu_bf16_on_a_cpu_run_is_one_error_line(ptb_slice_bin, run_cli):
    bad = run_cli("fairseq-train", ptb_slice_bin, "--task", "awd_language_modeling", "--arch", "awd_lstm",
                  "--emsize", "16", "--nhid", "16", "--nlayers", "2", "--batch-size", "8", "--cpu",
                  "--gpu-bf16", "--max-update", "1", "--no-save", expect_fail=True)
    assert bad.returncode == 2 and "Traceback" not in bad.stdout
    errors = [line for line in bad.stdout.splitlines() if "error:" in line]
    assert errors and "--gpu-bf16 needs a CUDA GPU" in errors[-1]
