"""Small builders and reference loops shared by tests (not fixtures)."""

import math

import torch

from fairseq.data import Dictionary
from omegaconf import OmegaConf


def dictionary_of_size(n: int) -> Dictionary:
    """A fairseq dictionary with exactly ``n`` symbols (its 4 specials included)."""
    d = Dictionary()
    for i in range(n - len(d)):
        d.add_symbol(f"w{i}")
    assert len(d) == n
    return d


def model_cfg(dataclass, **overrides):
    """A model config as fairseq passes it: the dataclass defaults with ``overrides``."""
    cfg = OmegaConf.structured(dataclass)
    for k, v in overrides.items():
        setattr(cfg, k, v)
    return cfg


def naive_pointer(probs, hidden, targets, window, theta, lam, bptt):
    """Per-token transcription of the formula and pointer.py's bookkeeping, one stream."""
    hist_h, hist_y, out = [], [], []
    for c0 in range(0, len(targets), bptt):
        start = len(hist_h)
        hist_h += list(hidden[c0 : c0 + bptt])
        hist_y += list(targets[c0 : c0 + bptt])
        for idx in range(len(targets[c0 : c0 + bptt])):
            t = c0 + idx
            g = start + idx
            p = probs[t].clone()
            if g > window:
                keys = torch.stack(hist_h[g - window : g])
                a = torch.softmax(theta * keys @ hidden[t], 0)
                ptr = torch.zeros_like(p)
                for ai, yi in zip(a, hist_y[g - window : g]):
                    ptr[yi] += ai
                p = lam * ptr + (1 - lam) * p
            out.append(-math.log(p[targets[t]].item()))
        hist_h, hist_y = hist_h[-window:], hist_y[-window:]
    return torch.tensor(out)


@torch.no_grad()
def per_token_loop(model, stream):
    """A straight batch-1 loop: one token at a time, state carried, no batching or windows.

    Returns −log p(target) per position, the last-layer outputs and the vocabulary distributions.
    """
    dec = model.decoder
    state = dec.init_state(1, dec.embed_tokens.weight)
    nll, hidden, probs = [], [], []
    for t in range(stream.numel() - 1):
        raw, dropped, state = dec.run(stream[t : t + 1].view(1, 1), state)
        lp = torch.log_softmax(dec.output_layer(dropped.transpose(0, 1)).float(), -1)[0, 0]
        nll.append(-lp[stream[t + 1]])
        hidden.append(raw[0, 0])
        probs.append(lp.exp())
    return torch.stack(nll), torch.stack(hidden), torch.stack(probs)


def assert_eval_lm_pointer_equals_loop(run_cli, data, ckpt, window=30, theta=0.5, lam=0.2, bptt=50):
    """``fairseq-eval-lm`` with the cache pointer (batch 1, windows of ``bptt``) scores the test split as a
    one-token-at-a-time loop with :func:`naive_pointer` does; returns the checkpoint's model, loaded.
    """
    import re

    from fairseq import checkpoint_utils

    out = run_cli("fairseq-eval-lm", data, "--task", "awd_language_modeling", "--path", ckpt, "--cpu",
                  "--num-workers", "0", "--bptt", str(bptt), "--batch-size", "1", "--pointer-window", str(window),
                  "--pointer-theta", str(theta), "--pointer-lambda", str(lam)).stdout
    m = re.search(r"Loss \(base 2\): ([\d.]+), Perplexity: ([\d.]+)", out)
    assert m, out[-3000:]
    models, _, task = checkpoint_utils.load_model_ensemble_and_task([ckpt], arg_overrides={"data": data})
    model = models[0].eval()
    task.load_dataset("test")
    stream = task.dataset("test").stream
    _, hidden, probs = per_token_loop(model, stream)
    ref = naive_pointer(probs, hidden, stream[1:], window, theta, lam, bptt)
    assert abs(ref.double().mean().item() / math.log(2) - float(m.group(1))) < 2e-4
    return model
