"""Dynamic evaluation (Krause et al. 2018) against a naive loop of the paper's equations,
λ/η = 0 equal to plain evaluation, a clear gain on a shifted corpus, and fairseq-eval-lm.

The naive loop is written here from the equations (module docstring of
awd_plugins/dynamic_eval.py): score a segment with the current weights, then
θ ← θ − η ∇L + λ (θ_g − θ) (sgd) or θ ← θ − η ∇L / (MS + ε) + λ min(MS/mean MS, 1/λ) (θ_g − θ) (rms).
"""

import copy
import math
import re

import pytest
import torch

import awd_plugins  # noqa: F401
from awd_plugins.cli.score import positional_scores
from awd_plugins.data.stream_dataset import StreamDataset, batchify, evaluation_windows
from awd_plugins.dynamic_eval import DynamicEvaluator
from awd_plugins.errors import AwdUserError
from awd_plugins.models.awd_lstm import AwdLstmConfig, AwdLstmDecoder, AwdLstmModel
from awd_plugins.modules import lstm as lstm_module
from _helpers import dictionary_of_size, model_cfg

V = 30
ONE_THREAD = {"OMP_NUM_THREADS": "1"}  # tiny sequential updates: a second thread only waits on a loaded machine


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py


def tiny_model(seed=0, **cfg):
    torch.manual_seed(seed)
    dec = AwdLstmDecoder(model_cfg(AwdLstmConfig, emsize=8, nhid=12, nlayers=2, **cfg), dictionary_of_size(V))
    return AwdLstmModel(dec).eval()


def windows(stream, bsz, bptt, key="test"):
    streams = StreamDataset(batchify(stream, bsz), carry_key=key)
    return [streams.collater(list(cols)) for cols in evaluation_windows(streams.length, bptt)]


def ours(model, stream, bsz, bptt, evaluator=None, seg_len=None):
    """log p(target) per window through the package's path (SequenceScorer + adapting iterator)."""
    batches = windows(stream, bsz, bptt)
    if evaluator is not None:
        batches = evaluator.wrap(model, batches, seg_len, bptt)
    model.reset_carried_state()
    return torch.cat(list(positional_scores(model, batches, dictionary_of_size(V))), dim=1)


def naive_statistics(model, train, bsz, seg):
    """MS per parameter: sqrt(mean over training batches of g²), then r = MS / mean_tensors(mean MS)."""
    dec = model.decoder
    data = batchify(train, bsz)
    state = dec.init_state(bsz, dec.embed_tokens.weight)
    sums, n = [torch.zeros_like(p) for p in model.parameters()], 0
    for i in range(0, data.size(1) - 1, seg):
        x, y = data[:, i : i + seg], data[:, i + 1 : i + 1 + seg]
        x = x[:, : y.size(1)]
        _, out, state = dec.run(x.t(), state)
        state = [(h.detach(), c.detach()) for h, c in state]
        logits = dec.output_layer(out).float()  # T×B×V
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, V), y.t().reshape(-1))
        grads = torch.autograd.grad(loss, list(model.parameters()), allow_unused=True)
        for s, g in zip(sums, grads):
            if g is not None:
                s += g * g
        n += 1
    ms = [torch.sqrt(s / n) for s in sums]
    gsum = sum(m.mean() for m in ms) / len(ms)
    return ms, [m / gsum for m in ms]


def naive_dynamic_eval(model, stream, seg, rule, lr, lam, stats=None, eps=2e-5):
    """Batch 1: for each segment, log p(targets) with θ_{i−1}, then the update on its mean loss."""
    model = copy.deepcopy(model)
    dec = model.decoder
    params = list(model.parameters())
    theta_g = [p.detach().clone() for p in params]
    state = dec.init_state(1, dec.embed_tokens.weight)
    scores = []
    for i in range(0, stream.numel() - 1, seg):
        x, y = stream[i : i + seg], stream[i + 1 : i + 1 + seg]
        x = x[: y.numel()]
        _, out, state = dec.run(x.view(-1, 1), state)
        state = [(h.detach(), c.detach()) for h, c in state]
        logp = torch.log_softmax(dec.output_layer(out).float()[:, 0], -1).gather(1, y.view(-1, 1))[:, 0]
        scores.append(logp.detach())
        grads = torch.autograd.grad(-logp.mean(), params, allow_unused=True)
        with torch.no_grad():
            for k, (p, p0, g) in enumerate(zip(params, theta_g, grads)):
                g = torch.zeros_like(p) if g is None else g
                if rule == "sgd":
                    p += -lr * g + lam * (p0 - p)
                else:
                    ms, r = stats[0][k], stats[1][k].clamp(max=1 / lam)
                    p += -lr * g / (ms + eps) + lam * r * (p0 - p)
    return torch.cat(scores)[None], params


@pytest.mark.parametrize("rule,lr,lam", [("sgd", 0.5, 0.05), ("rms", 3e-3, 0.02)])
def test_matches_the_papers_update_loop(rule, lr, lam):
    model = tiny_model()
    torch.manual_seed(1)
    test, train = torch.randint(4, V, (61,)), torch.randint(4, V, (203,))
    evaluator = DynamicEvaluator(model, rule, lr, lam)
    stats = None
    if rule == "rms":
        evaluator.collect_statistics(model.decoder, train, bsz=4, seg_len=5)
        stats = naive_statistics(copy.deepcopy(model), train, 4, 5)
        for ms, ref in zip(evaluator.ms, stats[0]):
            assert torch.allclose(ms, ref, atol=1e-7, rtol=1e-5)
    # evaluation windows of 12 tokens split into segments of 5: the same segments as the loop
    got = ours(model, test, 1, 12, evaluator, seg_len=5)
    want, params = naive_dynamic_eval(tiny_model(), test, 5, rule, lr, lam, stats)  # from θ_g
    assert got.shape == want.shape == (1, 60)
    assert torch.allclose(got, want, atol=2e-5)
    assert not torch.allclose(got, ours(tiny_model(), test, 1, 5), atol=1e-3)  # it did adapt
    for p, q in zip(model.parameters(), params):
        assert torch.allclose(p, q, atol=1e-5)
    evaluator.reset()
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), tiny_model().parameters()))


@pytest.mark.parametrize("rule", ["sgd", "rms"])
def test_lr_zero_is_plain_evaluation_exactly(rule, monkeypatch):
    # bit for bit only through the same oneDNN LSTM kernel: dynamic evaluation needs gradients, i.e. the
    # training kernel, while plain evaluation runs the inference kernel on some CPUs (~1e-7 apart)
    monkeypatch.setattr(lstm_module, "EVAL_KERNEL", "training")
    model = tiny_model()
    torch.manual_seed(2)
    test = torch.randint(4, V, (83,))
    plain = ours(model, test, 2, 5)
    evaluator = DynamicEvaluator(model, rule, 0.0, 0.01)
    if rule == "rms":
        evaluator.collect_statistics(model.decoder, torch.randint(4, V, (100,)), bsz=2, seg_len=5)
    assert torch.equal(ours(model, test, 2, 5, evaluator), plain)
    assert evaluator.updates == plain.size(1) // 5 + (plain.size(1) % 5 > 0)
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), tiny_model().parameters()))


def test_pointer_mixes_on_the_adapted_outputs():
    model = tiny_model()
    torch.manual_seed(3)
    test = torch.randint(4, 12, (70,))
    evaluator = DynamicEvaluator(model, "sgd", 0.5, 0.0)
    adapted_plain = ours(model, test, 1, 5, evaluator)
    evaluator.reset()
    model.set_pointer(20, 1.0, 0.3)
    with_pointer = ours(model, test, 1, 5, evaluator)
    evaluator.reset()
    # the same adaptation happened (the pointer only mixes the outputs), and the cache did help here
    assert not torch.equal(with_pointer, adapted_plain)
    assert torch.equal(with_pointer[:, :21], adapted_plain[:, :21])  # positions 0..window: no cache yet
    assert with_pointer[:, 21:].mean() > adapted_plain[:, 21:].mean()


def test_shifted_test_half_gains_clearly():
    """Trained on cycles of tokens 4..15; the test's second half cycles through 16..29 instead."""
    model = tiny_model(seed=4, dropout=0.0, dropouth=0.0, dropouti=0.0, dropoute=0.0, wdrop=0.0)
    train = torch.arange(4, 16).repeat(60)
    data = batchify(train, 8)
    opt = torch.optim.Adam(model.parameters(), lr=0.03)
    model.train()
    for step in range(60):
        i = (step * 10) % (data.size(1) - 11)
        _, out, _ = model.decoder.run(data[:, i : i + 10].t(), model.decoder.init_state(8, model.decoder.embed_tokens.weight))
        loss = model.decoder.nll(out.transpose(0, 1), data[:, i + 1 : i + 11]).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    test = torch.cat([torch.arange(4, 16).repeat(5), torch.arange(16, 30).repeat(8)])
    plain = -ours(model, test, 1, 5)[0, 60:].mean().item()
    evaluator = DynamicEvaluator(model, "sgd", 1.0, 0.001)
    dynamic = -ours(model, test, 1, 5, evaluator)[0, 60:].mean().item()
    assert dynamic < plain - 1.0, (plain, dynamic)  # nats per token on the shifted half


def test_bad_options_are_user_errors():
    model = tiny_model()
    with pytest.raises(AwdUserError, match="--dynamic-eval-decay"):
        DynamicEvaluator(model, "sgd", 0.1, 1.5)
    with pytest.raises(AwdUserError, match="--dynamic-eval-lr"):
        DynamicEvaluator(model, "rms", -1.0, 0.1)
    with pytest.raises(AwdUserError, match="statistics"):
        ours(model, torch.randint(4, V, (20,)), 1, 5, DynamicEvaluator(model, "rms", 0.1, 0.1))


# -- through fairseq's command line, on a tiny trained checkpoint ------------------------------------

TRAIN = ["--task", "awd_language_modeling", "--arch", "awd_lstm", "--emsize", "16", "--nhid", "24", "--nlayers", "2",
         "--criterion", "split_cross_entropy", "--optimizer", "sgd", "--lr", "20", "--clip-norm", "0.25",
         "--batch-size", "8", "--bptt", "12", "--seed", "1", "--cpu", "--log-format", "simple", "--num-workers", "0",
         "--no-epoch-checkpoints", "--max-epoch", "1", "--no-save-optimizer-state"]


@pytest.fixture(scope="module")
def checkpoint(small_bin, tmp_path_factory):
    from conftest import PLUGIN, cli, run

    # trained once per session, shared by test_dynamic_eval, test_score and test_knn
    save = tmp_path_factory.getbasetemp() / "evalx_tiny_checkpoint"
    if not (save / "checkpoint_last.pt").exists():
        run(cli("fairseq-train") + [small_bin, *TRAIN, "--save-dir", str(save), "--user-dir", PLUGIN], env=ONE_THREAD)
    return str(save / "checkpoint_last.pt")


def eval_lm(run_cli, data, ckpt, *extra):
    out = run_cli("fairseq-eval-lm", data, "--task", "awd_language_modeling", "--path", ckpt, "--cpu",
                  "--num-workers", "0", "--bptt", "20", *extra, env=ONE_THREAD).stdout
    m = re.search(r"Loss \(base 2\): ([\d.]+)", out)
    assert m, out[-3000:]
    return float(m.group(1)), out


def test_fairseq_eval_lm_with_dynamic_eval_and_pointer(checkpoint, small_bin, run_cli):
    """One fairseq-eval-lm run equals the in-process evaluation with the same evaluator (rms + pointer)."""
    from awd_plugins.cli.dynamic_eval_search import evaluate
    from awd_plugins.cli.score import load_model

    opts = ["--dynamic-eval", "rms", "--dynamic-eval-lr", "2e-4", "--dynamic-eval-decay", "0.01",
            "--dynamic-eval-bptt", "7", "--dynamic-eval-stats-batches", "30", "--dynamic-eval-stats-bsz", "10",
            "--pointer-window", "40", "--pointer-lambda", "0.1"]
    loss, out = eval_lm(run_cli, small_bin, checkpoint, *opts)
    assert "dynamic evaluation: rms" in out and "30 training batches" in out
    model, task = load_model(checkpoint, small_bin, cpu=True, overrides={"bptt": 20})
    model.set_pointer(40, 1.0, 0.1)
    evaluator = DynamicEvaluator(model, "rms", 2e-4, 0.01)
    task.load_dataset("train")
    evaluator.collect_statistics(model.decoder, task.dataset("train").stream, 10, 7, 30)
    total, count = evaluate(model, task, "test", evaluator, seg_len=7)
    assert count == 2064
    assert abs(total / count / math.log(2) - loss) < 1e-4


def test_search_prints_cost_and_best_pair(checkpoint, small_bin, capsys):
    from awd_plugins.cli import dynamic_eval_search

    lr, decay, loss = dynamic_eval_search.main([small_bin, "--path", checkpoint, "--rule", "sgd", "--lrs", "0,0.3",
                                                "--decays", "0,0.01", "--bptt", "10", "--cpu",
                                                "--max-valid-tokens", "500"])
    out = capsys.readouterr().out
    rows = [line.split() for line in out.splitlines() if re.match(r"^\s+[\d.]+\s+[\d.]+\s+[\d.]+\s+[\d.]+$", line)]
    assert len(rows) == 4 and all(float(r[3]) >= 0 for r in rows)  # lr, decay, ppl, seconds per point
    base = float(re.search(r"without dynamic evaluation: ppl ([\d.]+)", out).group(1))
    lr0 = [float(r[2]) for r in rows if float(r[0]) == 0]
    assert all(abs(p - base) < 0.02 for p in lr0)  # η = 0 is the plain evaluation
    assert f"--dynamic-eval-lr {lr:g} --dynamic-eval-decay {decay:g}" in out and "test with it: ppl" in out
    assert math.exp(loss) == pytest.approx(min(float(r[2]) for r in rows), abs=0.01)


def test_bad_option_through_eval_lm_is_one_error_line(checkpoint, small_bin, run_cli):
    out = run_cli("fairseq-eval-lm", small_bin, "--task", "awd_language_modeling", "--path", checkpoint, "--cpu",
                  "--num-workers", "0", "--dynamic-eval", "sgd", "--dynamic-eval-decay", "3", expect_fail=True, env=ONE_THREAD).stdout
    errors = [line for line in out.splitlines() if "error:" in line]
    assert len(errors) == 1 and "--dynamic-eval-decay must be in [0, 1]" in errors[0]
    assert "Traceback" not in out
