"""--remap-embeddings (issue #16): finetune a pretrained model on a corpus with another vocabulary."""

import gzip
import logging
import os

import pytest
import torch
from fairseq.data import Dictionary
from fairseq.tasks import FairseqTask
from omegaconf import OmegaConf

from _helpers import model_cfg
from awd_plugins.data.stream_dataset import batchify
from awd_plugins.errors import AwdUserError
from awd_plugins.models.remap_embeddings import EmbeddingRemap, remap_for_finetuning, remap_rows, row_map
from awd_plugins.models.rnn_lm import RnnLmConfig, RnnLmModel
from awd_plugins.tasks.awd_language_modeling import AwdLanguageModelingConfig, AwdLanguageModelingTask
from conftest import REPO, binarize


def _dict(symbols):
    d = Dictionary()
    for s in symbols:
        d.add_symbol(s)
    return d


def test_rows_follow_symbols_and_new_symbols_get_the_mean_row():
    old, new = _dict(["a", "b", "c"]), _dict(["c", "z", "a"])
    table = torch.arange(len(old) * 2, dtype=torch.float).view(len(old), 2)
    rows = row_map(old, new)
    out = remap_rows(table, rows)
    assert torch.equal(out[new.index("c")], table[old.index("c")])
    assert torch.equal(out[new.index("a")], table[old.index("a")])
    assert torch.equal(out[new.index("z")], table.mean(0))
    assert torch.equal(out[: new.nspecial], table[: old.nspecial])  # <s> <pad> </s> <unk> are shared


def _task(data, **kw):
    cfg = OmegaConf.structured(AwdLanguageModelingConfig(data=data, **kw))
    cfg.seed, cfg.train_subset = 1, "train"
    return AwdLanguageModelingTask.setup_task(cfg)


@pytest.fixture(scope="module")
def other_corpus_bin(tmp_path_factory):
    """The bundled corpus's held-out text as a new training corpus, with its own (smaller) dictionary."""
    root = tmp_path_factory.mktemp("other")
    raw = root / "raw"
    raw.mkdir()
    src = os.path.join(REPO, "data", "wikitext-2-small")
    with gzip.open(os.path.join(src, "valid.txt.gz"), "rt", encoding="utf-8") as f:
        lines = f.readlines()
    (raw / "train.txt").write_text("".join(lines[: len(lines) // 2]), encoding="utf-8")
    for split in ("valid", "test"):
        (raw / f"{split}.txt").write_text("".join(lines[len(lines) // 2 :]), encoding="utf-8")
    return binarize(str(raw), str(root / "bin"), extra=["--nwordssrc", "600"])


def _model(task, seed=0):
    torch.manual_seed(seed)
    return RnnLmModel.build_model(model_cfg(RnnLmConfig, emsize=16, nhid=16, nlayers=1, dropout=0.0), task)


def _loss(model, stream, bptt=20, steps=None, lr=None):
    """Mean NLL over the windows of 4 streams; with ``lr``, SGD updates on the way (pretraining)."""
    data = batchify(stream, 4)
    opt = torch.optim.Adam(model.parameters(), lr=lr) if lr else None
    total, count, state = 0.0, 0, None
    for i in range(0, data.size(1) - 1, bptt)[:steps]:
        src, tgt = data[:, i : i + bptt], data[:, i + 1 : i + bptt + 1]
        src = src[:, : tgt.size(1)]
        dec = model.decoder
        state = dec.init_state(4, dec.embed_tokens.weight) if state is None else state
        _, out, state = dec.run(src.t(), state)
        state = [s.detach() for s in state] if isinstance(state, (list, tuple)) else state.detach()
        nll = dec.nll(out.transpose(0, 1), tgt)
        if opt:
            opt.zero_grad()
            nll.mean().backward()
            opt.step()
        total, count = total + nll.sum().item(), count + nll.numel()
    return total / count


def test_finetuned_model_starts_lower_than_a_fresh_one(small_bin, other_corpus_bin, tmp_path, caplog):
    old_task = _task(small_bin)
    old_task.load_dataset("train")
    pretrained = _model(old_task)
    pretrained.train()
    _loss(pretrained, old_task.dataset("train").stream, lr=0.01)  # one epoch: enough to learn the unigram
    state = pretrained.state_dict()

    task = _task(other_corpus_bin, remap_embeddings=os.path.join(small_bin, "dict.txt"))
    task.cfg.finetune_from_model, task.cfg.save_dir = "pretrained.pt", str(tmp_path)
    assert len(task.dictionary) != len(old_task.dictionary)
    task.load_dataset("train")
    finetuned = _model(task, seed=1)
    finetuned.remap_embeddings = remap_for_finetuning(task.cfg, task.dictionary)
    with caplog.at_level(logging.INFO):
        finetuned.load_state_dict(state)
    line = [r.getMessage() for r in caplog.records if "--remap-embeddings:" in r.getMessage()][0]
    shared = [s for s in task.dictionary.symbols[4:] if s in old_task.dictionary.indices]
    assert f"{len(shared):,} of the {len(task.dictionary) - 4:,} symbols" in line
    assert finetuned.remap_embeddings is None  # applied once
    word = shared[10]
    emb = finetuned.decoder.embed_tokens.weight
    assert torch.equal(emb[task.dictionary.index(word)], state["decoder.embed_tokens.weight"][old_task.dictionary.index(word)])

    fresh = _model(task, seed=1)
    finetuned.eval(), fresh.eval()
    with torch.no_grad():
        stream = task.dataset("train").stream
        start_finetuned, start_fresh = _loss(finetuned, stream, steps=20), _loss(fresh, stream, steps=20)
    print(f"start loss on the new corpus: finetuned {start_finetuned:.3f}, fresh {start_fresh:.3f} nats")
    assert start_finetuned < start_fresh - 0.5, (start_finetuned, start_fresh)


def test_task_attaches_the_remap_only_for_a_first_finetuning_launch(small_bin, other_corpus_bin, tmp_path, monkeypatch):
    monkeypatch.setattr(FairseqTask, "build_model", lambda self, cfg, from_checkpoint=False: torch.nn.Linear(1, 1))
    task = _task(other_corpus_bin, remap_embeddings=os.path.join(small_bin, "dict.txt"))
    task.cfg.finetune_from_model, task.cfg.save_dir = "pretrained.pt", str(tmp_path)
    assert isinstance(task.build_model(None).remap_embeddings, EmbeddingRemap)
    assert getattr(task.build_model(None, from_checkpoint=True), "remap_embeddings", None) is None  # eval/hub reload
    (tmp_path / "checkpoint_last.pt").write_bytes(b"")
    assert task.build_model(None).remap_embeddings is None  # resuming: already the new vocabulary
    task.cfg.finetune_from_model = None
    with pytest.raises(AwdUserError, match="needs --finetune-from-model"):
        task.build_model(None)
    task.cfg.finetune_from_model, task.cfg.remap_embeddings = "pretrained.pt", str(tmp_path / "none.txt")
    with pytest.raises(AwdUserError, match="dictionary not found"):
        task.build_model(None)


def test_wrong_dictionary_is_a_user_error(small_bin, other_corpus_bin):
    old_task, task = _task(small_bin), _task(other_corpus_bin)
    state = _model(old_task).state_dict()
    remap = EmbeddingRemap(task.dictionary, task.dictionary)  # not the pretrained model's dictionary
    with pytest.raises(AwdUserError, match="give the dict.txt the model was trained with"):
        remap(_model(task), state)


def test_fairseq_train_finetunes_with_remapped_embeddings(small_bin, other_corpus_bin, tmp_path):
    """End to end: pretrain 2 updates, then fairseq-train --finetune-from-model --remap-embeddings."""
    from conftest import PLUGIN, cli, run

    common = ["--user-dir", PLUGIN, "--task", "awd_language_modeling", "--arch", "awd_lstm", "--emsize", "8",
              "--nhid", "8", "--nlayers", "2", "--criterion", "split_cross_entropy", "--optimizer", "sgd", "--lr", "1",
              "--batch-size", "4", "--bptt", "10", "--max-update", "2", "--cpu", "--num-workers", "0", "--seed", "1",
              "--disable-validation", "--no-epoch-checkpoints", "--log-format", "simple"]
    run(cli("fairseq-train") + [small_bin, *common, "--save-dir", str(tmp_path / "pre")])
    pre = str(tmp_path / "pre" / "checkpoint_last.pt")
    out = run(cli("fairseq-train") + [other_corpus_bin, *common, "--save-dir", str(tmp_path / "ft"),
                                      "--finetune-from-model", pre,
                                      "--remap-embeddings", os.path.join(small_bin, "dict.txt")]).stdout
    assert "symbols of the new dictionary keep their pretrained rows" in out, out[-3000:]
    assert (tmp_path / "ft" / "checkpoint_last.pt").exists()
    # without the remap the vocabularies do not fit: one error line
    proc = run(cli("fairseq-train") + [other_corpus_bin, *common, "--save-dir", str(tmp_path / "ft2"),
                                       "--finetune-from-model", pre], expect_fail=True)
    assert "Traceback" not in proc.stdout and "dictionary of" in proc.stdout
