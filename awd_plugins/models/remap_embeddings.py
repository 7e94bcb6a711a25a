"""Finetune a pretrained model on a corpus with another vocabulary (``--remap-embeddings``, issue #16).

The rows of the vocabulary tables the decoder interface owns (``embed_tokens``, and
``output_projection``'s weight and bias when untied) are mapped by symbol from the
pretrained model's dictionary to the new one: a symbol of both keeps its trained
row, a new symbol starts from the mean of the pretrained rows (fastai's
``match_embeds`` rule). The model itself is built for the new dictionary, so its
split-softmax clusters / adaptive bands follow the new vocabulary; parameters
whose shape depends on those cut-offs and differs from the checkpoint's start
from the new model's initialisation and are named in the log.
"""

import logging
from typing import Dict

import torch
from fairseq.data import Dictionary

from awd_plugins.errors import AwdUserError

logger = logging.getLogger(__name__)

VOCAB_TABLES = ("decoder.embed_tokens.weight", "decoder.output_projection.weight", "decoder.output_projection.bias")


def row_map(old: Dictionary, new: Dictionary) -> torch.Tensor:
    """For each new symbol, its index in ``old`` or −1."""
    return torch.tensor([old.indices.get(sym, -1) for sym in new.symbols], dtype=torch.long)


def remap_rows(table: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """New table: row i = ``table[rows[i]]``, or the mean row where ``rows[i]`` is −1."""
    out = table.float().mean(0, keepdim=True).to(table.dtype).expand(len(rows), *table.shape[1:]).clone()
    known = rows >= 0
    out[known] = table[rows[known]]
    return out


def remap_state_dict(state_dict: Dict[str, torch.Tensor], model_state: Dict[str, torch.Tensor],
                     old: Dictionary, new: Dictionary) -> Dict[str, torch.Tensor]:
    """The pretrained ``state_dict`` rewritten for a model built on ``new`` (``model_state``)."""
    emb = state_dict.get(VOCAB_TABLES[0])
    if emb is None or emb.dim() != 2:
        raise AwdUserError("--remap-embeddings: the pretrained model has no decoder.embed_tokens.weight table "
                           "(adaptive input embeddings are not remapped)")
    if emb.size(0) != len(old):
        raise AwdUserError(f"--remap-embeddings: the pretrained embedding has {emb.size(0)} rows but the given "
                           f"dictionary has {len(old)} symbols: give the dict.txt the model was trained with")
    rows = row_map(old, new)
    out, fresh = dict(state_dict), []
    for key in VOCAB_TABLES:
        if key in state_dict and state_dict[key].size(0) == len(old):
            out[key] = remap_rows(state_dict[key], rows)
    for key, value in list(out.items()):
        target = model_state.get(key)
        if target is not None and torch.is_tensor(value) and value.shape != target.shape:
            out[key] = target.detach().clone()  # depends on the new cut-offs: the new model's own start
            fresh.append(key)
    kept = int((rows >= 0).sum()) - new.nspecial
    logger.info(
        f"--remap-embeddings: {kept:,} of the {len(new) - new.nspecial:,} symbols of the new dictionary keep their "
        f"pretrained rows, {int((rows < 0).sum()):,} new symbols start from the mean row "
        f"({len(old) - new.nspecial - kept:,} pretrained symbols dropped)"
        + (f"; re-initialised for the new cut-offs: {', '.join(fresh)}" if fresh else "")
    )
    return out


class EmbeddingRemap:
    """Attached to a model by the task; applied once, to the pretrained checkpoint's state dict."""

    def __init__(self, old: Dictionary, new: Dictionary):
        self.old, self.new = old, new

    def __call__(self, model, state_dict):
        model.remap_embeddings = None  # only the --finetune-from-model load is remapped
        return remap_state_dict(state_dict, model.state_dict(), self.old, self.new)


def remap_for_finetuning(task_cfg, dictionary: Dictionary):
    """The remap to attach to a freshly built model, or None when fairseq will not load the
    pretrained model (it does so only when the save folder has no checkpoint_last.pt yet)."""
    import os

    if not task_cfg.finetune_from_model:
        raise AwdUserError("--remap-embeddings needs --finetune-from-model (the pretrained checkpoint)")
    if not os.path.isfile(task_cfg.remap_embeddings):
        raise AwdUserError(f"--remap-embeddings: dictionary not found: {task_cfg.remap_embeddings}")
    if os.path.exists(os.path.join(task_cfg.save_dir, "checkpoint_last.pt")):
        return None  # resuming this finetuning run: its checkpoints already have the new vocabulary
    return EmbeddingRemap(Dictionary.load(task_cfg.remap_embeddings), dictionary)
