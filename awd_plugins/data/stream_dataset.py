"""Contiguous token streams for truncated BPTT (REFERENCE §1.2–1.3, §3.1).

The corpus is one long id stream. ``batchify`` cuts it into B equal contiguous
streams (row j = j-th slice of the corpus, the remainder dropped); a batch is a
window of consecutive columns [i, i+T) with targets [i+1, i+T+1), so window k+1
of row j continues window k of row j and the model can carry its state.

A dataset *item* is a column index; :meth:`StreamDataset.collater` turns a list of
consecutive columns into the window. Windows are chosen by :func:`training_windows`
(variable length, REFERENCE §3.1) or :func:`evaluation_windows` (fixed length).
"""

from typing import List, Tuple

import numpy as np
import torch
from fairseq.data import FairseqDataset


def load_token_stream(indexed_dataset, eos: int) -> torch.Tensor:
    """All sentences of a binarized split as one 1-D int64 tensor, preceded by ``eos``.

    The whole split in memory: for tests and small tools. The task reads windows
    lazily through :class:`TokenStream` instead.
    """
    return TokenStream.from_indexed(indexed_dataset, eos, "").stream


def batchify(stream: torch.Tensor, bsz: int, rank: int = 0, world_size: int = 1, min_length: int = 2) -> torch.Tensor:
    """B×L matrix of contiguous streams; with ``world_size`` > 1 each rank keeps its own B rows.

    The in-memory form of :class:`StreamRows` (same rows, same columns), kept for tests and tools.
    """
    total = bsz * world_size
    length = stream_length(stream.numel(), total, min_length)
    return stream[: length * total].view(total, length)[rank * bsz : (rank + 1) * bsz].contiguous()


def stream_length(ntokens: int, total_streams: int, min_length: int = 2) -> int:
    """Columns of each of ``total_streams`` equal streams cut from ``ntokens`` (the remainder dropped).

    ``min_length``: 2 for evaluation (one input, one target), 3 for training (the window loop
    of :func:`training_windows` runs while start < L − 2)."""
    length = ntokens // total_streams
    if length < min_length:
        raise ValueError(
            f"a split of {ntokens} tokens is too short for {total_streams} streams of at least {min_length} tokens "
            f"(give fewer streams or more text)"
        )
    return length


def training_windows(
    length: int, bptt: int, rng: np.random.RandomState, variable: bool = True, cap: int = None
) -> List[Tuple[int, int]]:
    """(start, sampled seq_len) of every window of one training epoch (REFERENCE §3.1).

    Variable length: base = bptt with probability 0.95 else bptt/2, then
    seq_len = max(5, int(Normal(base, 5))), optionally capped. The loop advances by
    the sampled length while start < length − 2, as the reference's does; the
    window itself is cut at the data's end (:func:`window_columns`), but the
    learning-rate rescale uses the sampled length.
    """
    windows, i = [], 0
    while i < length - 2:
        if variable:
            base = bptt if rng.rand() < 0.95 else bptt / 2.0
            seq_len = max(5, int(rng.normal(base, 5)))
            if cap is not None:
                seq_len = min(seq_len, cap)
        else:
            seq_len = bptt
        windows.append((i, seq_len))
        i += seq_len
    return windows


def window_columns(start: int, seq_len: int, length: int) -> range:
    """Input columns of a window, cut so that every target column exists.

    A ``range`` (constant size) rather than an array: an epoch's list of windows then
    costs a few dozen bytes per window, whatever the window length.
    """
    return range(start, min(start + seq_len, length - 1))


def evaluation_windows(length: int, bptt: int) -> List[range]:
    """Fixed windows of ``bptt`` columns covering every target once (REFERENCE §1.4)."""
    return [window_columns(i, bptt, length) for i in range(0, length - 1, bptt)]


class TokenStream(FairseqDataset):
    """One split as a single id stream ``</s> w_1 w_2 ...``, read lazily from the data-bin.

    fairseq-preprocess ends every line with ``</s>``, which plays the reference's
    ``<eos>``. The leading ``</s>`` makes the first word a prediction target too, so
    a batch-1 evaluation scores exactly as many tokens as the reference counts
    (e.g. 82,430 on the PTB test set).

    ``tokens`` is the data-bin's memory-mapped ``.bin`` as a numpy array in its own
    dtype (uint16 for vocabularies under 65,500 symbols): nothing is copied at load
    time and :meth:`read` converts only the slice asked for, so the memory of a rank
    does not grow with the corpus (issue #16). Indexed datasets that are not
    memory-mapped (``--dataset-impl lazy/cached/raw``) are concatenated in memory.
    """

    def __init__(self, tokens, split: str, eos: int = None, owner=None):
        super().__init__()
        if torch.is_tensor(tokens):  # an in-memory stream that already starts with its </s>
            tokens, eos = tokens.numpy(), None
        self.tokens = tokens  # 1-D numpy array (possibly a view of the data-bin's mmap)
        self.eos = eos  # prepended virtually; None when ``tokens`` already starts with it
        self.split = split
        # the indexed dataset owning the mmap: it unmaps the file when collected, so keep it alive
        self._owner = owner

    def __getstate__(self):
        # a pickled mmap view would copy the whole split: send the owner and map it again on arrival
        state = dict(self.__dict__)
        if self._owner is not None:
            state["tokens"] = None
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        if self.tokens is None:
            self.tokens = np.frombuffer(self._owner._bin_buffer, dtype=self._owner._index.dtype)

    @classmethod
    def from_indexed(cls, indexed_dataset, eos: int, split: str) -> "TokenStream":
        bin_buffer = getattr(indexed_dataset, "_bin_buffer", None)
        if bin_buffer is not None and hasattr(indexed_dataset, "_index"):
            flat = np.frombuffer(bin_buffer, dtype=indexed_dataset._index.dtype)
            return cls(flat, split, eos, owner=indexed_dataset)
        if len(indexed_dataset) == 0:
            flat = np.zeros(0, dtype=np.int64)
        else:
            flat = np.concatenate([indexed_dataset[i].numpy() for i in range(len(indexed_dataset))])
        return cls(flat, split, eos)

    def __len__(self):
        return len(self.tokens) + (self.eos is not None)

    def read(self, start: int, stop: int) -> np.ndarray:
        """Positions [start, stop) of the stream as int64 (only that slice is read and converted)."""
        if self.eos is None:
            return self.tokens[start:stop].astype(np.int64)
        out = np.empty(max(0, stop - start), dtype=np.int64)
        if start == 0 and stop > 0:
            out[0] = self.eos
            out[1:] = self.tokens[0 : stop - 1]
        else:
            out[:] = self.tokens[start - 1 : stop - 1]
        return out

    @property
    def stream(self) -> torch.Tensor:
        """The whole split as an int64 tensor (materialised: for tests and small tools only)."""
        return torch.from_numpy(self.read(0, len(self)))

    def __getitem__(self, index):
        return int(self.read(index, index + 1)[0])


class StreamRows:
    """Rows ``[rank·B, (rank+1)·B)`` of the ``B·world`` contiguous streams of a :class:`TokenStream`.

    Row j is the j-th slice of ``length`` tokens of the corpus, exactly as
    :func:`batchify`'s, but nothing is materialised: :meth:`columns` reads each row's
    slice of the window from the stream, so a rank only ever touches its own rows.
    """

    def __init__(self, stream: TokenStream, bsz: int, rank: int = 0, world_size: int = 1, min_length: int = 2):
        self.stream = stream
        self.bsz = bsz
        self.length = stream_length(len(stream), bsz * world_size, min_length)
        self.first_row = rank * bsz

    def columns(self, start: int, stop: int) -> torch.Tensor:
        """B×(stop−start) int64 tensor of columns [start, stop)."""
        rows = [
            self.stream.read((self.first_row + j) * self.length + start, (self.first_row + j) * self.length + stop)
            for j in range(self.bsz)
        ]
        return torch.from_numpy(np.stack(rows))


def describe_shard(rows: StreamRows, split: str, rank: int, world: int) -> str:
    """The log line naming the rows and stream positions a rank owns (multi-node runs, issue #16)."""
    first, last = rows.first_row, rows.first_row + rows.bsz
    return (
        f"{split}: rank {rank}/{world} owns streams {first}..{last - 1} of {rows.bsz * world}, "
        f"stream positions [{first * rows.length}, {last * rows.length}) of {len(rows.stream)}"
    )


class _TensorRows:
    """A B×L tensor behind :class:`StreamRows`' interface (tests, tools with in-memory streams)."""

    def __init__(self, streams: torch.Tensor):
        self.streams = streams
        self.bsz, self.length = streams.shape

    def columns(self, start: int, stop: int) -> torch.Tensor:
        return self.streams[:, start:stop].contiguous()


class StreamDataset(FairseqDataset):
    """B contiguous streams; item i is column i, collated into windows.

    ``streams`` is a :class:`StreamRows` (lazy, what the task uses) or a B×L tensor.
    """

    def __init__(self, streams, carry_key: str):
        super().__init__()
        self.rows = _TensorRows(streams) if torch.is_tensor(streams) else streams
        self.carry_key = carry_key

    @property
    def bsz(self) -> int:
        return self.rows.bsz

    @property
    def length(self) -> int:
        return self.rows.length

    def __len__(self):
        return self.length

    def __getitem__(self, index):
        return index

    def num_tokens(self, index):
        return self.bsz

    def size(self, index):
        return self.bsz

    def collater(self, samples):
        if len(samples) == 0:
            return {}
        start = int(samples[0])
        tlen = len(samples)
        if int(samples[-1]) != start + tlen - 1 or start + tlen >= self.length:
            raise ValueError(f"columns {samples[0]}..{samples[-1]} are not one window of this stream")
        # one read of tlen+1 columns; contiguous copies, as fairseq's cross_entropy .view()s the target
        both = self.rows.columns(start, start + tlen + 1)
        src = both[:, :tlen].contiguous()
        tgt = both[:, 1:].contiguous()
        return {
            "id": torch.arange(self.bsz),
            "nsentences": self.bsz,
            "ntokens": self.bsz * tlen,
            "net_input": {
                "src_tokens": src,
                "src_lengths": torch.full((self.bsz,), tlen, dtype=torch.long),
                "carry_key": self.carry_key,
                "carry_pos": start,
            },
            "target": tgt,
        }
