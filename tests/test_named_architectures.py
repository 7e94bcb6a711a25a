"""Every named architecture of the package trains and validates, at a tiny width (issue #14).

The list comes from fairseq's registries, so an architecture added later is covered
without touching this file. Each case builds the model the way fairseq-train does
(``--arch NAME``: the named configuration's own defaults), overriding only width-like
fields (sizes, attention memory, adaptive-softmax cutoffs that must fit the tiny
dictionary): depth, attention placement, tying, experts, rounds, dropouts... stay as
published, which the test checks field by field. No depth had to be cut: at width 32
the deepest (SRU++, 10 layers) takes under a second. It then runs 2 updates and one
validation pass on ``small_bin`` through fairseq's Trainer and the task's stream batching,
with one optimizer for all (Adam; the recipes' own optimizers are tested elsewhere).
"""

import math
import os
from itertools import islice

import pytest
import torch

import awd_plugins  # noqa: F401  (registers the models)
from conftest import PLUGIN

# Width-like fields, scaled together so that the largest is TINY (equal widths stay equal,
# ratios such as SRU++'s n_d/n_proj or SHA-RNN's Boom factor are kept). 0 keeps its meaning.
WIDTHS = ("emsize", "nhid", "nhidlast", "mogrifier_rank", "n_d", "n_proj")
TINY = 32
MEMORIES = ("memory_len", "eval_memory_len")  # attention span: capped, 0 (= previous window) kept
TINY_MEMORY = 24
CUTOFFS = "adaptive_softmax_cutoff"  # vocabulary ids: as many cutoffs, spread over the tiny dictionary
ADAPTIVE_WIDTH = "n_e"  # the adaptive bands' first width, scaled alike (read only with cutoffs)
MAX_PARAMS = 1_000_000  # a new width field this file does not shrink shows up here


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    # tiny matrices: a second intra-op thread only waits (on 2 shared cores, ~100x slower per matmul)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# Spot checks that the tiny models keep the published structure (the field-by-field check
# below covers every architecture; these look at the built modules).
STRUCTURE = {
    "awd_lstm_mos_ptb": lambda d: len(d.rnns) == 3 and d.mixture_of_softmaxes.n_experts == 15,
    "awd_qrnn_wt103": lambda d: len(d.rnns) == 4,
    "mogrifier_lstm_ptb": lambda d: len(d.rnns) == 2 and d.rnns[0].rounds == 5,
    "sha_rnn_enwik8": lambda d: d.attention_blocks == [2] and len(d.blocks) == 4,
    "sha_rnn_enwik8_full": lambda d: d.attention_blocks == [0, 1, 2, 3],
    "srupp_enwik8_base": lambda d: d.attends == [True] * 10,
    "srupp_wt103_large_k5": lambda d: len(d.attends) == 10 and sum(d.attends) == 2
    and len(d.adaptive_softmax.cutoff) == 4,
    "srupp_lm1b_large_k5": lambda d: sum(d.attends) == 2 and len(d.adaptive_softmax.cutoff) == 3,
    "sru_6x910": lambda d: len(d.attends) == 6 and d.output_projection.weight is d.embed_tokens.weight,
    "rnn_lm_large_tied": lambda d: d.nlayers == 2 and d.output_projection.weight is d.embed_tokens.weight,
}


def named_architectures():
    from fairseq.models import ARCH_MODEL_REGISTRY

    return sorted(name for name, cls in ARCH_MODEL_REGISTRY.items() if cls.__module__.startswith("awd_plugins."))


ARCHS = named_architectures()


def test_the_registry_lists_the_named_architectures():
    from fairseq.models import ARCH_CONFIG_REGISTRY

    assert ARCHS
    assert {"awd_lstm_ptb", "sha_rnn_enwik8_full", "srupp_enwik8_base", "mogrifier_lstm_ptb",
            "awd_lstm_mos_ptb"} <= set(ARCHS)
    assert all(name in ARCH_CONFIG_REGISTRY for name in ARCHS)
    assert set(STRUCTURE) <= set(ARCHS)


def parse(data, arch, *extra):
    """fairseq-train's argument parsing: ``--arch`` applies the named configuration under the flags."""
    from fairseq import options

    argv = [data, "--user-dir", PLUGIN, "--task", "awd_language_modeling", "--arch", arch,
            "--criterion", "split_cross_entropy", "--optimizer", "adam", "--lr", "0.003", "--clip-norm", "0.25",
            "--batch-size", "4", "--bptt", "12", "--cpu", "--seed", "1",
            "--num-workers", "0", *map(str, extra)]
    return options.parse_args_and_arch(options.get_training_parser(), argv)


def published_config(data, arch):
    """The named configuration: what ``--arch`` sets, the model's dataclass defaults for the rest."""
    from fairseq.models import ARCH_MODEL_NAME_REGISTRY, MODEL_DATACLASS_REGISTRY
    from omegaconf import OmegaConf

    args = vars(parse(data, arch))  # fairseq leaves the fields the architecture does not set out
    defaults = OmegaConf.structured(MODEL_DATACLASS_REGISTRY[ARCH_MODEL_NAME_REGISTRY[arch]])
    return {k: args.get(k, defaults[k]) for k in defaults if k != "_name"}


def tiny_overrides(model_cfg, vocab):
    """Command-line flags shrinking the published configuration ``model_cfg``."""
    present = {k: model_cfg[k] for k in WIDTHS if model_cfg.get(k)}
    scale = TINY / max(present.values())
    sizes = {k: max(2, round(v * scale)) for k, v in present.items()}
    cutoffs = str(model_cfg.get(CUTOFFS) or "")
    if cutoffs:
        n = len(cutoffs.split(","))
        sizes[CUTOFFS] = ",".join(str(vocab * (i + 1) // (n + 2)) for i in range(n))
        # adaptive band i has width n_e / div_val^i: the last one needs at least 1
        sizes[ADAPTIVE_WIDTH] = max(round(model_cfg[ADAPTIVE_WIDTH] * scale), int(model_cfg["div_val"] ** n))
    for k in MEMORIES:
        if model_cfg.get(k):
            sizes[k] = min(model_cfg[k], TINY_MEMORY)
    flags = []
    for k, v in sizes.items():
        flags += ["--" + k.replace("_", "-"), v]
    return sizes, flags


@pytest.mark.parametrize("arch", ARCHS)
def test_named_architecture_trains_and_validates_at_tiny_width(small_bin, arch):
    from fairseq import metrics, tasks
    from fairseq.data import Dictionary
    from fairseq.dataclass.utils import convert_namespace_to_omegaconf
    from fairseq.trainer import Trainer

    published = published_config(small_bin, arch)
    vocab = len(Dictionary.load(os.path.join(small_bin, "dict.txt")))
    sizes, flags = tiny_overrides(published, vocab)
    cfg = convert_namespace_to_omegaconf(parse(small_bin, arch, *flags))
    # only the widths changed: depth, attention blocks, tying, experts, rounds, dropouts are the published ones
    assert cfg.model._name == arch
    for key, value in published.items():
        if key not in sizes:
            assert cfg.model[key] == value, key

    task = tasks.setup_task(cfg.task)
    assert len(task.source_dictionary) == vocab
    for split in ("train", "valid"):
        task.load_dataset(split)
    torch.manual_seed(1)
    model = task.build_model(cfg.model)
    criterion = task.build_criterion(cfg.criterion)
    assert STRUCTURE.get(arch, lambda d: True)(model.decoder)
    nparams = sum(p.numel() for p in model.parameters())
    assert nparams < MAX_PARAMS, f"{arch}: {nparams} parameters at 'tiny' width: add its width fields to WIDTHS"

    valid_itr = lambda: task.get_batch_iterator(task.dataset("valid")).next_epoch_itr(shuffle=False)  # noqa: E731
    probe = next(valid_itr())

    def probe_nll():
        model.eval()
        model.reset_carried_state()
        with torch.no_grad():
            return criterion(model, probe)[2]["loss"].item() / probe["ntokens"]

    before = probe_nll()
    trainer = Trainer(cfg, task, model, criterion)
    itr = trainer.get_train_iterator(epoch=1).next_epoch_itr(shuffle=False)
    trainer.begin_epoch(1)
    train_losses = []
    for sample in islice(itr, 2):
        train_losses.append(trainer.train_step([sample])["loss"])
    assert trainer.get_num_updates() == 2
    assert all(math.isfinite(x) and x > 0 for x in train_losses), train_losses
    for name, p in model.named_parameters():
        assert torch.isfinite(p).all(), name

    trainer.begin_valid_epoch(1)
    with metrics.aggregate(new_root=True) as agg:
        for sample in valid_itr():
            trainer.valid_step(sample)
    valid = agg.get_smoothed_values()["loss"]  # bits per token
    assert math.isfinite(valid) and 0 < valid < math.log2(vocab) + 1, valid

    after = probe_nll()
    assert math.isfinite(before) and after < before, (before, after)

    # the output is a distribution over the dictionary, and the one the loss is computed from
    model.eval()
    model.reset_carried_state()
    with torch.no_grad():
        net_output = model(**probe["net_input"])
        # sample=None: the whole distribution (given a sample, fairseq's adaptive softmax fills
        # in only the clusters of its targets and leaves 0 as log-probability elsewhere)
        probs = model.get_normalized_probs(net_output, log_probs=False, sample=None).float()
        loss = criterion(model, probe)[2]["loss"].item()
    assert probs.shape == probe["target"].shape + (vocab,)
    assert (probs >= 0).all()
    torch.testing.assert_close(probs.sum(-1), torch.ones(probs.shape[:-1]), atol=1e-4, rtol=0)
    nll = -probs.gather(-1, probe["target"].unsqueeze(-1)).log().sum().item()
    assert nll == pytest.approx(loss, rel=1e-4)
