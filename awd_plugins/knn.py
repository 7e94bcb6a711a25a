"""kNN-LM over a datastore (Khandelwal et al. 2020, arXiv:1911.00172; Grave et al. 2017's
unbounded cache).

A trained model is run once over a corpus (``awd-datastore``, :func:`build_datastore`);
every position i gives a key k_i, the last layer's output (the vector the softmax
reads, before the final dropout: ``raw_out`` of the decoder interface), and a value
v_i, the token that followed. At evaluation, for the output h_t of each position,
the K nearest keys (squared L2 distance d_j) give

    p_kNN(w) = Σ_j softmax_j(−d_j / T) [v_j = w],
    p(w)     = (1 − λ) p_model(w) + λ p_kNN(w),                    (Khandelwal et al., eq. 2)

where p_model already includes the cache pointer when one is set (both are
mixtures, the pointer's inside). Only the ≤ K tokens found get kNN mass, so the
logarithms are taken over K entries per position, not the vocabulary.

The datastore is a folder: ``index.faiss`` (exact ``flat`` search, or the
approximate inverted-file ``ivf`` index searched in ``--knn-nprobe`` of its lists;
``fp16`` stores keys in half precision in either), ``values.npy`` (int32/int64) and
``datastore.json`` (sizes and provenance). Keys are written to a memory-mapped file
while the model runs, so memory stays bounded by one window besides faiss' index.
``faiss`` comes from the ``faiss-cpu`` package (extra ``knn``).
"""

import json
import logging
import math
import os
import time
from typing import Optional

import numpy as np
import torch

from awd_plugins.errors import AwdUserError

logger = logging.getLogger(__name__)

INDEX, VALUES, META = "index.faiss", "values.npy", "datastore.json"
INDEX_KINDS = ("flat", "ivf")


def import_faiss():
    try:
        import faiss
    except ImportError:
        raise AwdUserError("the kNN datastore needs faiss: pip install faiss-cpu (or: pip install awd-plugins[knn])")
    return faiss


def make_index(kind: str, dim: int, fp16: bool, nlist: int):
    """An empty faiss index over squared L2 distance."""
    faiss = import_faiss()
    if kind == "flat":
        if fp16:
            return faiss.IndexScalarQuantizer(dim, faiss.ScalarQuantizer.QT_fp16, faiss.METRIC_L2)
        return faiss.IndexFlatL2(dim)
    quantizer = faiss.IndexFlatL2(dim)
    if fp16:
        index = faiss.IndexIVFScalarQuantizer(quantizer, dim, nlist, faiss.ScalarQuantizer.QT_fp16, faiss.METRIC_L2)
    else:
        index = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_L2)
    return index  # faiss' Python wrapper keeps the quantizer alive with the index


def build_index(keys: np.ndarray, kind: str, fp16: bool, nlist: int = 0, chunk: int = 65536, seed: int = 1,
                train_size: int = 100_000):
    """Index over ``keys`` (N×H, possibly a memory map), added ``chunk`` rows at a time."""
    n, dim = keys.shape
    if kind == "ivf":
        # faiss' k-means wants ≥ 39 training points per list
        nlist = nlist or max(1, min(4096, int(4 * math.sqrt(n)), n // 39))
        if n < nlist:
            raise AwdUserError(f"an ivf index of {nlist} lists needs at least {nlist} keys, the datastore has {n}")
    index = make_index(kind, dim, fp16, nlist)
    if not index.is_trained:
        rows = np.sort(np.random.RandomState(seed).choice(n, min(n, train_size), replace=False))
        index.train(np.ascontiguousarray(keys[rows], dtype=np.float32))
    for i in range(0, n, chunk):
        index.add(np.ascontiguousarray(keys[i : i + chunk], dtype=np.float32))
    return index


class KnnDatastore:
    """A loaded datastore; call it on log-probabilities to mix p_kNN in (eq. 2)."""

    def __init__(self, index, values: np.ndarray, k: int, lam: float, temperature: float, nprobe: int = 32):
        if k < 1:
            raise AwdUserError(f"--knn-k must be positive, got {k}")
        if not 0.0 <= lam <= 1.0:
            raise AwdUserError(f"--knn-lambda must be in [0, 1], got {lam}")
        if not temperature > 0:
            raise AwdUserError(f"--knn-temperature must be positive, got {temperature}")
        self.index, self.k, self.lam, self.temperature = index, min(k, index.ntotal), lam, temperature
        self.values = torch.from_numpy(np.asarray(values, dtype=np.int64))
        if hasattr(index, "nprobe"):
            index.nprobe = nprobe

    @classmethod
    def load(cls, folder: str, vocab_size: int, k: int, lam: float, temperature: float, nprobe: int = 32):
        faiss = import_faiss()
        meta_path = os.path.join(folder, META)
        if not os.path.isfile(meta_path):
            raise AwdUserError(f"{folder} is not a datastore ({META} not found): build one with awd-datastore")
        try:
            with open(meta_path, encoding="utf-8") as f:
                meta = json.load(f)
            index = faiss.read_index(os.path.join(folder, INDEX))
            values = np.load(os.path.join(folder, VALUES), mmap_mode="r", allow_pickle=False)
        except Exception as e:  # an untrusted folder: one line
            raise AwdUserError(f"cannot read the datastore in {folder}: {e}")
        if meta.get("vocab_size") != vocab_size:
            raise AwdUserError(f"the datastore in {folder} was built with a dictionary of {meta.get('vocab_size')} "
                               f"symbols, this model has {vocab_size}")
        if index.ntotal != len(values) or index.ntotal == 0:
            raise AwdUserError(f"the datastore in {folder} is inconsistent: {index.ntotal} keys, {len(values)} values")
        return cls(index, values, k, lam, temperature, nprobe)

    def neighbours(self, hidden: torch.Tensor):
        """Squared distances and values of the K nearest keys: two (N×K) tensors for ``hidden`` (N×H)."""
        query = np.ascontiguousarray(hidden.detach().float().cpu().numpy())
        dist, idx = self.index.search(query, self.k)
        dist, idx = torch.from_numpy(dist), torch.from_numpy(idx)
        found = idx >= 0  # an approximate index may return fewer than K (−1 padding)
        values = self.values[idx.clamp(min=0)]
        dist = dist.masked_fill(~found, float("inf"))
        return dist, values

    def __call__(self, log_probs: torch.Tensor, hidden: torch.Tensor) -> torch.Tensor:
        """log((1 − λ) p + λ p_kNN) for ``log_probs`` (B×T×V) and the outputs ``hidden`` (B×T×H)."""
        from awd_plugins.modules.cache_pointer import _log1m, mix

        if self.lam == 0.0:
            return log_probs
        if hidden.shape[:2] != log_probs.shape[:2]:
            raise AwdUserError("the kNN-LM needs whole windows: leave fairseq-eval-lm's --softmax-batch at its default")
        log_probs = log_probs.float()
        bsz, tlen, vocab = log_probs.shape
        dist, values = self.neighbours(hidden.reshape(bsz * tlen, -1))
        weights = torch.softmax(-dist / self.temperature, dim=-1).to(log_probs.device)  # N × K
        index = values.to(log_probs.device).view(bsz, tlen, -1)
        weights = weights.view(bsz, tlen, -1)
        # p_kNN at the K found tokens (repeated tokens add up), everything else gets (1 − λ) p
        p_knn = log_probs.new_zeros(log_probs.shape).scatter_add_(2, index, weights).gather(2, index)
        return (log_probs + _log1m(self.lam)).scatter_(2, index, mix(log_probs.gather(2, index), p_knn, self.lam))


@torch.no_grad()
def build_datastore(model, stream: torch.Tensor, out: str, bsz: int, bptt: int, kind: str = "flat",
                    fp16: bool = False, nlist: int = 0, vocab_size: Optional[int] = None, provenance=None,
                    log_every: float = 30.0) -> dict:
    """Run ``model`` over ``stream`` (B streams, windows of ``bptt``, state carried) into folder ``out``.

    ``out`` must exist and be empty (the command builds in a temporary folder and moves it).
    """
    from awd_plugins.data.stream_dataset import batchify, evaluation_windows

    faiss = import_faiss()
    decoder = model.decoder
    device = next(model.parameters()).device
    try:
        streams = batchify(stream, bsz)
    except ValueError as e:
        raise AwdUserError(f"cannot build a datastore: {e}")
    n = streams.size(0) * (streams.size(1) - 1)
    state = decoder.init_state(streams.size(0), decoder.embed_tokens.weight)
    keys = values = None
    written, start, last = 0, time.time(), time.time()
    for cols in evaluation_windows(streams.size(1), bptt):
        a, b = int(cols[0]), int(cols[-1]) + 1
        raw, _, state = decoder.run(streams[:, a:b].t().to(device), state)  # T×B×H
        # row order: stream by stream would need all windows; position-major order is as good for a datastore
        h = raw.reshape(-1, raw.size(-1)).float().cpu().numpy()
        y = streams[:, a + 1 : b + 1].t().reshape(-1).numpy()
        if keys is None:
            keys = np.lib.format.open_memmap(os.path.join(out, "keys.npy"), mode="w+",
                                             dtype=np.float16 if fp16 else np.float32, shape=(n, h.shape[1]))
            values = np.lib.format.open_memmap(os.path.join(out, VALUES), mode="w+",
                                               dtype=np.int32 if (vocab_size or 0) < 2**31 else np.int64, shape=(n,))
        keys[written : written + len(h)] = h
        values[written : written + len(y)] = y
        written += len(h)
        if time.time() - last > log_every:
            logger.info(f"datastore: {written:,} / {n:,} keys ({time.time() - start:.0f}s)")
            last = time.time()
    keys.flush()
    values.flush()
    logger.info(f"datastore: {written:,} keys of dimension {keys.shape[1]}; building the {kind} index")
    index = build_index(keys, kind, fp16, nlist)
    faiss.write_index(index, os.path.join(out, INDEX))
    meta = {"keys": int(written), "dim": int(keys.shape[1]), "index": kind, "fp16": bool(fp16),
            "nlist": int(getattr(index, "nlist", 0)), "vocab_size": vocab_size, "streams": int(streams.size(0)),
            "bptt": int(bptt), **(provenance or {})}
    del keys
    os.unlink(os.path.join(out, "keys.npy"))  # the index holds the keys
    with open(os.path.join(out, META), "w", encoding="utf-8") as f:
        json.dump(meta, f, indent=1)
    return meta
