"""Corpora of any size (issue #16): windows are read lazily from the memory-mapped data-bin.

The lazy path (:class:`TokenStream` + :class:`StreamRows`) must give exactly the
windows and targets of the in-memory path it replaced (the whole split as an int64
tensor, :func:`batchify`, then the rank's rows), for every batch size, world size
and rank, and must never materialise the split.
"""

import os

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from awd_plugins.data.stream_dataset import (
    StreamDataset,
    StreamRows,
    TokenStream,
    batchify,
    evaluation_windows,
    training_windows,
    window_columns,
)
from awd_plugins.tasks.awd_language_modeling import AwdLanguageModelingConfig, AwdLanguageModelingTask


def _task(data, **kw):
    cfg = OmegaConf.structured(AwdLanguageModelingConfig(data=data, **kw))
    cfg.seed, cfg.train_subset = 1, "train"
    return AwdLanguageModelingTask.setup_task(cfg)


def _in_memory_stream(indexed, eos):
    """The code this replaced: every sentence concatenated into int64, ``</s>`` in front."""
    flat = torch.cat([indexed[i].long() for i in range(len(indexed))])
    return torch.cat([flat.new_tensor([eos]), flat])


def _windows(ds, windows):
    for cols in windows:
        s = ds.collater(list(cols))
        yield s["net_input"]["src_tokens"], s["target"], s["net_input"]["carry_pos"]


@pytest.mark.parametrize("corpus,split", [("small_bin", "train"), ("small_bin", "valid"), ("ptb_slice_bin", "train")])
def test_lazy_windows_equal_the_in_memory_windows(corpus, split, request):
    small_bin = request.getfixturevalue(corpus)  # the bundled corpus, and a PTB slice when ../shared has it
    task = _task(small_bin)
    task.load_dataset(split)
    lazy = task.dataset(split)
    assert isinstance(lazy.tokens, np.ndarray) and lazy.tokens.dtype == np.uint16  # the data-bin's dtype
    assert not lazy.tokens.flags.owndata  # a view of fairseq's mmap, not a copy
    from fairseq.data import data_utils

    old = _in_memory_stream(data_utils.load_indexed_dataset(os.path.join(small_bin, split), task.dictionary),
                            task.dictionary.eos())
    assert len(lazy) == old.numel() and torch.equal(lazy.stream, old)
    for bsz, world in [(1, 1), (3, 1), (4, 2), (2, 3), (5, 4)]:
        for rank in range(world):
            rows = StreamRows(lazy, bsz, rank, world)
            ref = batchify(old, bsz, rank, world)
            assert rows.length == ref.size(1)
            new_ds, old_ds = StreamDataset(rows, "k"), StreamDataset(ref, "k")
            wins = evaluation_windows(rows.length, 23)
            rng = lambda: np.random.RandomState(7)  # noqa: E731
            wins += [window_columns(s, n, rows.length) for s, n in training_windows(rows.length, 30, rng())]
            for (a_src, a_tgt, a_pos), (b_src, b_tgt, b_pos) in zip(_windows(new_ds, wins), _windows(old_ds, wins)):
                assert a_pos == b_pos and torch.equal(a_src, b_src) and torch.equal(a_tgt, b_tgt)
                assert a_src.dtype == torch.int64 and a_tgt.is_contiguous()


def test_stream_reads_across_the_leading_eos():
    ts = TokenStream(np.array([5, 6, 7, 8], dtype=np.uint16), "x", eos=2)
    assert len(ts) == 5 and ts.read(0, 3).tolist() == [2, 5, 6] and ts.read(2, 5).tolist() == [6, 7, 8]
    assert ts[0] == 2 and ts[4] == 8 and ts.stream.tolist() == [2, 5, 6, 7, 8]
    rows = StreamRows(ts, 1, 1, 2)  # rank 1 of 2: the second slice of 2 tokens
    assert rows.columns(0, 2).tolist() == [[6, 7]]
    with pytest.raises(ValueError, match="too short for 3 streams"):
        StreamRows(ts, 3)


def test_rank_touches_only_its_rows(small_bin):
    """Reads go through TokenStream.read: record the positions a rank's epoch asks for."""
    task = _task(small_bin)
    task.load_dataset("train")
    stream = task.dataset("train")
    seen = []
    orig = stream.read
    stream.read = lambda a, b: seen.append((a, b)) or orig(a, b)
    world, bsz = 3, 2
    covered = np.zeros(len(stream), dtype=np.int32)
    for rank in range(world):
        seen.clear()
        rows = StreamRows(stream, bsz, rank, world)
        ds = StreamDataset(rows, "k")
        for cols in evaluation_windows(rows.length, 40):
            ds.collater(list(cols))
        lo, hi = rank * bsz * rows.length, (rank + 1) * bsz * rows.length
        assert all(lo <= a and b <= hi for a, b in seen)
        for a, b in seen:
            covered[a:b] += 1
    # ranks are disjoint row blocks; together they cover the kept part of the corpus
    kept = world * bsz * StreamRows(stream, bsz, 0, world).length
    assert covered[:kept].min() >= 1 and covered[kept:].sum() == 0


def test_training_losses_equal_the_in_memory_path(small_bin):
    """A few training updates through the task's iterator give the losses of the in-memory windows."""
    task = _task(small_bin, bptt=12)
    task.load_dataset("train")
    torch.manual_seed(0)
    emb = torch.nn.Embedding(len(task.dictionary), 16)
    rnn = torch.nn.LSTM(16, 16)
    out = torch.nn.Linear(16, len(task.dictionary))
    params = [*emb.parameters(), *rnn.parameters(), *out.parameters()]
    init = [p.detach().clone() for p in params]

    def train(batches):
        for p, p0 in zip(params, init):
            p.data.copy_(p0)
        opt = torch.optim.SGD(params, lr=1.0)
        losses, state = [], None
        for src, tgt in batches:
            h, state = rnn(emb(src.t()), state)
            state = tuple(s.detach() for s in state)
            loss = torch.nn.functional.cross_entropy(out(h).view(-1, out.out_features), tgt.t().reshape(-1))
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
        return losses

    itr = task.get_batch_iterator(task.dataset("train"), max_sentences=3, epoch=1).next_epoch_itr(shuffle=False)
    lazy = [(s["net_input"]["src_tokens"], s["target"]) for _, s in zip(range(6), itr)]
    old = batchify(task.dataset("train").stream, 3)
    rng = np.random.RandomState(1)
    ref = []
    for start, n in training_windows(old.size(1), 12, rng)[:6]:
        cols = window_columns(start, n, old.size(1))
        ref.append((old[:, cols[0] : cols[-1] + 1], old[:, cols[0] + 1 : cols[-1] + 2]))
    assert train(lazy) == train(ref)


def test_stream_outlives_its_loader_and_pickles_without_the_tokens(small_bin):
    import gc
    import pickle

    task = _task(small_bin)
    task.load_dataset("valid")
    stream = task.dataset("valid")
    ref = stream.read(0, 50).copy()
    gc.collect()  # the indexed dataset unmaps its file when collected: the stream must keep it
    assert np.array_equal(stream.read(0, 50), ref)
    blob = pickle.dumps(stream)
    assert len(blob) < stream.tokens.nbytes  # the split itself does not travel
    assert np.array_equal(pickle.loads(blob).read(0, 50), ref)
