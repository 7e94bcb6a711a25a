"""kNN-LM (Khandelwal et al. 2020) against a brute-force transcription of eq. 2, λ = 0 = plain
evaluation, exact vs approximate index, with the pointer, a corpus the datastore must help, and
awd-datastore + fairseq-eval-lm."""

import json
import math
import os
import re

import pytest
import torch

faiss = pytest.importorskip("faiss")  # the optional extra "knn"

import awd_plugins  # noqa: E402,F401
from awd_plugins.errors import AwdUserError  # noqa: E402
from awd_plugins.knn import KnnDatastore, build_datastore  # noqa: E402
from _helpers import naive_pointer, per_token_loop  # noqa: E402
from test_dynamic_eval import ONE_THREAD, V, checkpoint, ours, tiny_model  # noqa: E402,F401

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py


def datastore(tmp_path, model, train, bsz=3, kind="flat", fp16=False, nlist=0, name="ds"):
    out = tmp_path / name
    out.mkdir()
    build_datastore(model, train, str(out), bsz, 7, kind, fp16, nlist, vocab_size=V)
    return str(out)


def brute_force(model, train, test, bsz, k, lam, temperature, log_p_model=None):
    """−log p(target) per test position: (1 − λ) p_model + λ Σ_j softmax(−d_j/T) [v_j = y] over the K nearest."""
    rows = train[: train.numel() // bsz * bsz].view(bsz, -1)
    keys, vals = [], []
    for row in rows:
        _, h, _ = per_token_loop(model, row)
        keys.append(h)
        vals.append(row[1:])
    keys, vals = torch.cat(keys), torch.cat(vals)
    nll, hidden, probs = per_token_loop(model, test)
    p_model = probs.gather(1, test[1:, None])[:, 0] if log_p_model is None else log_p_model.exp()
    out = []
    for t, y in enumerate(test[1:]):
        d = ((keys - hidden[t]) ** 2).sum(-1)
        near = torch.topk(-d, k).indices
        w = torch.softmax(-d[near] / temperature, 0)
        p_knn = w[vals[near] == y].sum()
        out.append(-torch.log((1 - lam) * p_model[t] + lam * p_knn))
    return torch.stack(out)


def test_matches_the_brute_force_formula_and_lambda_zero(tmp_path):
    model = tiny_model()
    torch.manual_seed(5)
    train, test = torch.randint(4, 12, (300,)), torch.randint(4, 12, (40,))
    ds = datastore(tmp_path, model, train)
    meta = json.loads(open(os.path.join(ds, "datastore.json")).read())
    assert meta["keys"] == 3 * 99 and sorted(os.listdir(ds)) == ["datastore.json", "index.faiss", "values.npy"]
    plain = ours(model, test, 1, 6)
    model.knn = KnnDatastore.load(ds, V, k=8, lam=0.0, temperature=2.0)
    assert torch.equal(ours(model, test, 1, 6), plain)
    model.knn = KnnDatastore.load(ds, V, k=8, lam=0.3, temperature=2.0)
    got = ours(model, test, 1, 6)
    want = brute_force(model, train, test, 3, 8, 0.3, 2.0)
    assert torch.allclose(-got[0], want, atol=1e-4)
    assert not torch.allclose(got, plain, atol=1e-3)


def test_approximate_and_fp16_indexes(tmp_path):
    model = tiny_model()
    torch.manual_seed(6)
    train, test = torch.randint(4, V, (2000,)), torch.randint(4, V, (60,))
    exact = datastore(tmp_path, model, train, name="flat")
    model.knn = KnnDatastore.load(exact, V, k=16, lam=0.4, temperature=1.0)
    ref = ours(model, test, 1, 10)
    ivf = datastore(tmp_path, model, train, kind="ivf", nlist=8, name="ivf")
    model.knn = KnnDatastore.load(ivf, V, k=16, lam=0.4, temperature=1.0, nprobe=8)  # every list: exact
    assert torch.allclose(ours(model, test, 1, 10), ref, atol=1e-5)
    # approximate: 2 of the 8 lists; most nearest neighbours are still found
    _, hidden, _ = per_token_loop(model, test)
    approx = KnnDatastore.load(ivf, V, k=16, lam=0.4, temperature=1.0, nprobe=2)
    d_exact, _ = KnnDatastore.load(exact, V, k=1, lam=0.4, temperature=1.0).neighbours(hidden)
    d_approx, _ = approx.neighbours(hidden)
    recall = (d_approx[:, 0] - d_exact[:, 0]).abs().lt(1e-4).float().mean().item()
    assert 0.5 < recall <= 1.0, recall
    model.knn = approx
    assert torch.isfinite(ours(model, test, 1, 10)).all()
    half = datastore(tmp_path, model, train, fp16=True, name="fp16")
    model.knn = KnnDatastore.load(half, V, k=16, lam=0.4, temperature=1.0)
    diff = (ours(model, test, 1, 10) - ref).abs()
    # half-precision keys: the same mixture but where rounding swaps the K-th neighbour
    assert diff.lt(2e-3).float().mean() >= 0.9 and diff.mean() < 0.02, diff


def test_combined_with_the_pointer(tmp_path):
    model = tiny_model()
    torch.manual_seed(7)
    train, test = torch.randint(4, 12, (200,)), torch.randint(4, 12, (50,))
    model.knn = KnnDatastore.load(datastore(tmp_path, model, train), V, k=5, lam=0.2, temperature=1.0)
    model.set_pointer(10, 0.5, 0.3)
    got = ours(model, test, 1, 6)
    _, hidden, probs = per_token_loop(model, test)
    after_pointer = -naive_pointer(probs, hidden, test[1:], 10, 0.5, 0.3, 6)
    want = brute_force(model, train, test, 3, 5, 0.2, 1.0, log_p_model=after_pointer.float())
    assert torch.allclose(-got[0], want, atol=1e-4)


def test_a_datastore_of_the_text_being_read_helps_clearly(tmp_path):
    """The test text is a passage of the datastore's corpus: its neighbours predict it."""
    model = tiny_model(seed=8)
    torch.manual_seed(8)
    train = torch.randint(4, V, (1500,))
    test = train[700:800].clone()
    model.knn = KnnDatastore.load(datastore(tmp_path, model, train, bsz=1), V, k=4, lam=0.5, temperature=1.0)
    with_knn = -ours(model, test, 1, 10)[0, 10:].mean().item()
    model.knn = None
    plain = -ours(model, test, 1, 10)[0, 10:].mean().item()
    assert with_knn < plain - 1.0, (plain, with_knn)  # nats per token; plain ≈ log 26


def test_bad_datastore_and_options(tmp_path):
    with pytest.raises(AwdUserError, match="not a datastore"):
        KnnDatastore.load(str(tmp_path), V, 8, 0.2, 1.0)
    model = tiny_model()
    ds = datastore(tmp_path, model, torch.randint(4, V, (100,)))
    with pytest.raises(AwdUserError, match="dictionary of 30 symbols"):
        KnnDatastore.load(ds, 40, 8, 0.2, 1.0)
    with pytest.raises(AwdUserError, match="--knn-lambda"):
        KnnDatastore.load(ds, V, 8, 1.5, 1.0)
    (tmp_path / "ds" / "index.faiss").write_bytes(b"garbage")
    with pytest.raises(AwdUserError, match="cannot read the datastore"):
        KnnDatastore.load(ds, V, 8, 0.2, 1.0)


def test_awd_datastore_and_fairseq_eval_lm(checkpoint, small_bin, tmp_path, run_cli, capsys):
    from awd_plugins.cli import datastore as datastore_cli
    from awd_plugins.cli.dynamic_eval_search import evaluate
    from awd_plugins.cli.score import load_model

    out = tmp_path / "store"
    meta = datastore_cli.main(["--path", checkpoint, "--data", small_bin, "--out", str(out), "--cpu", "--fp16"])
    assert meta["keys"] == 10 * (12001 // 10 - 1) and meta["fp16"] and "keys of dimension 16" in capsys.readouterr().out
    with pytest.raises(AwdUserError, match="already exists"):
        datastore_cli.main(["--path", checkpoint, "--data", small_bin, "--out", str(out)])
    assert sorted(os.listdir(tmp_path)) == ["store"]  # no temporary folder left behind
    proc = run_cli("fairseq-eval-lm", small_bin, "--task", "awd_language_modeling", "--path", checkpoint, "--cpu",
                   "--num-workers", "0", "--bptt", "20", "--knn-datastore", str(out), "--knn-k", "32",
                   "--knn-lambda", "0.3", "--knn-temperature", "5", env=ONE_THREAD)
    loss = float(re.search(r"Loss \(base 2\): ([\d.]+)", proc.stdout).group(1))
    model, task = load_model(checkpoint, small_bin, cpu=True, overrides={"bptt": 20})
    plain, n = evaluate(model, task, "test")
    model.knn = KnnDatastore.load(str(out), len(task.target_dictionary), 32, 0.3, 5.0)
    total, count = evaluate(model, task, "test")
    assert count == n and abs(total / count / math.log(2) - loss) < 1e-4
    assert total < plain  # the training text's neighbours help this small model
