"""A finetune (--reset-optimizer --reset-meters) never leaves a checkpoint_best.pt worse than its input."""

import re

import pytest
import torch

import awd_plugins  # noqa: F401  (allow-lists the classes fairseq checkpoints hold)

from conftest import PLUGIN, cli, run

MODEL = [
    "--task", "awd_language_modeling", "--arch", "awd_lstm", "--emsize", "16", "--nhid", "24", "--nlayers", "2",
    "--criterion", "split_cross_entropy", "--clip-norm", "0.25", "--batch-size", "4", "--bptt", "12", "--seed", "1",
    "--cpu", "--log-format", "simple", "--log-interval", "1000", "--num-workers", "0", "--no-epoch-checkpoints",
    "--user-dir", PLUGIN,
]


def _valid_losses(log):
    return [float(m) for m in re.findall(r"\| valid on 'valid' subset \| loss ([\d.]+)", log)]


@pytest.fixture(scope="module")
def base(small_bin, tmp_path_factory):
    """One epoch of ordinary training: an undertrained model to finetune."""
    save = tmp_path_factory.mktemp("base")
    log = run(cli("fairseq-train") + [small_bin, *MODEL, "--optimizer", "nt_asgd", "--lr-scheduler", "nt_asgd",
                                      "--lr", "30", "--max-epoch", "1", "--save-dir", str(save)]).stdout
    assert "finetune:" not in log  # a fresh run has nothing to seed
    return save


def test_finetune_that_only_gets_worse_keeps_the_restored_model(small_bin, base, tmp_path):
    ft = tmp_path / "ft"
    restored = torch.load(base / "checkpoint_best.pt", weights_only=True)

    # a learning rate that only makes the model worse: plain SGD at lr 200 without clipping
    log = run(cli("fairseq-train") + [small_bin, *MODEL, "--optimizer", "sgd", "--lr", "200", "--clip-norm", "0",
                                      "--lr-scheduler", "fixed", "--max-epoch", "2", "--save-dir", str(ft),
                                      "--restore-file", str(base / "checkpoint_best.pt"), "--reset-optimizer",
                                      "--reset-lr-scheduler", "--reset-dataloader", "--reset-meters"]).stdout
    m = re.search(r"finetune: the restored model's valid loss is ([\d.]+)", log)
    assert m, log[-3000:]
    seeded = float(m.group(1))
    # the restored model's validation equals the validation that chose it as best
    assert seeded == pytest.approx(restored["extra_state"]["best"], abs=1e-3)
    finetuned = _valid_losses(log)
    assert len(finetuned) == 2 and min(finetuned) > seeded, log[-3000:]

    best = torch.load(ft / "checkpoint_best.pt", weights_only=True)
    assert best["extra_state"]["best"] == pytest.approx(seeded, abs=1e-3)
    assert best["model"].keys() == restored["model"].keys()
    assert all(torch.equal(best["model"][k], restored["model"][k]) for k in restored["model"])
    last = torch.load(ft / "checkpoint_last.pt", weights_only=True)
    assert last["extra_state"]["best"] == best["extra_state"]["best"]  # fairseq's best never fell below the input
    assert any(not torch.equal(last["model"][k], restored["model"][k]) for k in restored["model"])


def test_finetune_that_improves_replaces_the_restored_model(small_bin, base, tmp_path):
    ft = tmp_path / "ft"
    log = run(cli("fairseq-train") + [small_bin, *MODEL, "--optimizer", "nt_asgd", "--lr-scheduler", "nt_asgd",
                                      "--lr", "30", "--max-epoch", "1", "--save-dir", str(ft),
                                      "--finetune-from-model", str(base / "checkpoint_last.pt")]).stdout
    seeded = float(re.search(r"finetune: the restored model's valid loss is ([\d.]+)", log).group(1))
    (after,) = _valid_losses(log)
    assert after < seeded, log[-3000:]  # one more epoch at lr 30 on an undertrained model helps
    best = torch.load(ft / "checkpoint_best.pt", weights_only=True)
    last = torch.load(ft / "checkpoint_last.pt", weights_only=True)
    assert best["extra_state"]["best"] == pytest.approx(after, abs=1e-3)  # the log prints 4 digits
    assert all(torch.equal(best["model"][k], last["model"][k]) for k in last["model"])
