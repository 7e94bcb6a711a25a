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
    """All sentences of a binarized split as one 1-D tensor, preceded by ``eos``.

    fairseq-preprocess ends every line with ``</s>``, which plays the reference's
    ``<eos>``. The leading ``</s>`` makes the first word a prediction target too, so
    a batch-1 evaluation scores exactly as many tokens as the reference counts
    (e.g. 82,430 on the PTB test set).
    """
    bin_buffer = getattr(indexed_dataset, "_bin_buffer", None)
    if bin_buffer is not None and hasattr(indexed_dataset, "_index"):
        flat = np.frombuffer(bin_buffer, dtype=indexed_dataset._index.dtype)
        flat = torch.from_numpy(flat.astype(np.int64))
    else:
        flat = torch.cat([indexed_dataset[i].long() for i in range(len(indexed_dataset))])
    return torch.cat([flat.new_tensor([eos]), flat])


def batchify(stream: torch.Tensor, bsz: int, rank: int = 0, world_size: int = 1, min_length: int = 2) -> torch.Tensor:
    """B×L matrix of contiguous streams; with ``world_size`` > 1 each rank keeps its own B rows.

    ``min_length``: 2 for evaluation (one input, one target), 3 for training (the window loop
    of :func:`training_windows` runs while start < L − 2)."""
    total = bsz * world_size
    length = stream.numel() // total
    if length < min_length:
        raise ValueError(
            f"a split of {stream.numel()} tokens is too short for {total} streams of at least {min_length} tokens "
            f"(give fewer streams or more text)"
        )
    return stream[: length * total].view(total, length)[rank * bsz : (rank + 1) * bsz].contiguous()


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


def window_columns(start: int, seq_len: int, length: int) -> np.ndarray:
    """Input columns of a window, cut so that every target column exists."""
    return np.arange(start, min(start + seq_len, length - 1), dtype=np.int64)


def evaluation_windows(length: int, bptt: int) -> List[np.ndarray]:
    """Fixed windows of ``bptt`` columns covering every target once (REFERENCE §1.4)."""
    return [window_columns(i, bptt, length) for i in range(0, length - 1, bptt)]


class TokenStream(FairseqDataset):
    """One split as a single id stream; batchified for a batch size when iterated."""

    def __init__(self, stream: torch.Tensor, split: str):
        super().__init__()
        self.stream = stream
        self.split = split

    def __len__(self):
        return self.stream.numel()

    def __getitem__(self, index):
        return self.stream[index]


class StreamDataset(FairseqDataset):
    """B contiguous streams; item i is column i, collated into windows."""

    def __init__(self, streams: torch.Tensor, carry_key: str):
        super().__init__()
        self.streams = streams  # B × L
        self.carry_key = carry_key

    @property
    def bsz(self) -> int:
        return self.streams.size(0)

    @property
    def length(self) -> int:
        return self.streams.size(1)

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
        # contiguous copies: criteria such as fairseq's cross_entropy .view() the target
        src = self.streams[:, start : start + tlen].contiguous()
        tgt = self.streams[:, start + 1 : start + tlen + 1].contiguous()
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
