"""Mixture of Softmaxes head on the AWD stack (Yang et al. 2018): the authors' numbers, the
equation, the decoder interface (criterion, eval-lm, pointer, sampling) and a fairseq run.

tests/data/mos_tiny.pt holds the weights, inputs and outputs of zihangdai/mos's ``model.py``
(run unmodified on torch 2.13 in a scratch folder: 3 layers 6/8/7, 3 experts, 20 words, every
parameter perturbed, eval mode, two windows with the state carried; and one training step from
seed 99: log-probabilities, main.py's loss and its gradients).
"""

import argparse
import os
import re
from types import SimpleNamespace

import pytest
import torch

from awd_plugins.errors import AwdUserError
from awd_plugins.models.awd_lstm import (
    AwdLstmConfig, AwdLstmDecoder, AwdLstmModel, awd_lstm_mos_ptb, awd_lstm_mos_wt2,
)
from awd_plugins.models.awd_qrnn import AwdQrnnConfig, AwdQrnnDecoder
from _helpers import assert_eval_lm_pointer_equals_loop, dictionary_of_size, model_cfg
from test_rnn_lm import assert_low_temperature_is_greedy

DATA = os.path.join(os.path.dirname(__file__), "data", "mos_tiny.pt")


def tiny_cfg(**kw):
    base = dict(emsize=6, nhid=8, nlayers=3, nhidlast=7, n_experts=3, dropoutl=0.29)
    return model_cfg(AwdLstmConfig, **{**base, **kw})


NAMES = {"encoder.weight": "embed_tokens.weight", "decoder.weight": "output_projection.weight",
             "decoder.bias": "output_projection.bias", "prior.weight": "mixture_of_softmaxes.prior.weight",
             "latent.0.weight": "mixture_of_softmaxes.latent.weight",
             "latent.0.bias": "mixture_of_softmaxes.latent.bias"}


def our_name(key):
    if key in NAMES:
        return NAMES[key]
    layer, rest = key[len("rnns."):].split(".", 1)  # rnns.l.weight_hh_l0 → rnns.l.module.weight_hh_l0 (WeightDrop)
    return f"rnns.{layer}.module.{rest}"


def authors_decoder(g, wdrop=0.5, **dropouts):
    c = g["config"]
    dec = AwdLstmDecoder(tiny_cfg(emsize=c["ninp"], nhid=c["nhid"], nhidlast=c["nhidlast"], nlayers=c["nlayers"],
                                  n_experts=c["n_experts"], wdrop=wdrop, **dropouts), dictionary_of_size(c["ntoken"]))
    dec.load_state_dict({our_name(k): v for k, v in g["state_dict"].items()})
    return dec.eval()


def test_matches_the_authors_code_over_two_windows_with_carried_state():
    g = torch.load(DATA, weights_only=True)
    dec = authors_decoder(g)
    assert dec.sizes == [8, 8, 7] and dec.output_projection.weight is dec.embed_tokens.weight
    state = dec.init_state(3, dec.embed_tokens.weight)
    with torch.no_grad():
        for window in ("w1", "w2"):
            want = g[window]
            raw, dropped, state = dec.run(want["tokens"], state)
            # the decoder interface: batch-first features → output_layer → fairseq's normalisation
            lp = dec.get_normalized_probs((dec.output_layer(dropped.transpose(0, 1)), None), log_probs=True)
            assert torch.allclose(lp.transpose(0, 1), want["log_probs"], atol=1e-5)
            for (h, c), (wh, wc) in zip(state, want["hidden"]):
                assert torch.allclose(h, wh, atol=1e-5) and torch.allclose(c, wc, atol=1e-5)
            # the criterion's path gives the same numbers
            targets = torch.randint(0, 20, want["tokens"].t().shape)
            nll = dec.nll(dropped.transpose(0, 1), targets)
            ref = -want["log_probs"].transpose(0, 1).gather(2, targets.unsqueeze(2)).reshape(-1)
            assert torch.allclose(nll, ref, atol=1e-5)


def test_training_step_matches_the_authors_code_masks_loss_and_gradients():
    """Same seed, same mask draws (embedding rows, locked masks 1×B×H, then dropoutl's 1×B×K·E):
    main.py's loss (NLL + AR + TAR) and every gradient agree with our criterion's."""
    from awd_plugins.criterions.split_cross_entropy import SplitCrossEntropyCriterion

    g = torch.load(DATA, weights_only=True)
    ref = g["train"]
    dec = authors_decoder(g, wdrop=0.0, **ref["dropouts"]).train()
    model = AwdLstmModel(dec).train()
    tokens, targets = g["w1"]["tokens"].t(), g["w2"]["tokens"].t()  # batch-first, as fairseq's samples
    sample = {"net_input": {"src_tokens": tokens}, "target": targets, "ntokens": targets.numel(),
              "nsentences": targets.size(0)}
    torch.manual_seed(ref["seed"])
    loss, sample_size, _ = SplitCrossEntropyCriterion(None, alpha=2.0, beta=1.0)(model, sample)
    (loss / sample_size).backward()  # fairseq divides the gradient by the sample size
    assert torch.allclose(loss / sample_size, ref["loss"], atol=1e-5)
    params = dict(dec.named_parameters())
    for key, grad in ref["grads"].items():
        assert torch.allclose(params[our_name(key)].grad, grad, atol=1e-5), key


def test_head_is_the_papers_mixture_and_dropoutl_is_locked_over_time():
    torch.manual_seed(0)
    dec = AwdLstmDecoder(tiny_cfg(), dictionary_of_size(24))
    mos = dec.mixture_of_softmaxes
    feats = torch.randn(2, 5, 7, dtype=torch.double)
    dec.double().eval()
    W, b = dec.output_projection.weight, dec.output_projection.bias
    lp = dec.output_layer(feats)
    # Eq. (3) written out per position and expert, in probability space
    for bi in range(2):
        for t in range(5):
            g = feats[bi, t]
            prior = torch.softmax(mos.prior.weight @ g, 0)
            p = torch.zeros(24, dtype=torch.double)
            for k in range(3):
                h_k = torch.tanh(mos.latent.weight[k * 6 : (k + 1) * 6] @ g + mos.latent.bias[k * 6 : (k + 1) * 6])
                p += prior[k] * torch.softmax(W @ h_k + b, 0)
            assert torch.allclose(lp[bi, t].exp(), p, atol=1e-12)
    assert torch.allclose(lp.logsumexp(-1), torch.zeros(2, 5, dtype=torch.double), atol=1e-12)
    # training: one latent dropout mask per stream, shared by every time step (locked)
    dec.train()
    seen = {}
    mos.latent_dropout.register_forward_hook(lambda m, i, o: seen.update(x=i[0], y=o))
    dec.output_layer(feats)
    kept = (seen["y"] != 0)  # T×B×(K·E)
    assert torch.equal(kept, kept[:1].expand_as(kept)) and not kept.all()
    assert torch.allclose(seen["y"][kept], seen["x"][kept] / (1 - 0.29))


def arch_cfg(arch):
    ns = argparse.Namespace()
    arch(ns)  # as fairseq applies a named architecture to the parsed arguments
    return model_cfg(AwdLstmConfig, **vars(ns))


# what zihangdai/mos's model.py builds with the README's commands (printed by the authors' code)
@pytest.mark.parametrize("arch,vocab,authors", [(awd_lstm_mos_ptb, 10000, 21_500_620),
                                                (awd_lstm_mos_wt2, 33278, 34_909_528)])
def test_published_parameter_counts(arch, vocab, authors):
    cfg = arch_cfg(arch)
    model = AwdLstmModel.build_model(cfg, SimpleNamespace(target_dictionary=dictionary_of_size(vocab)))
    assert abs(sum(p.numel() for p in model.parameters()) - authors) <= 0.01 * authors
    assert sum(p.numel() for p in model.parameters()) == authors  # same layers: exactly equal
    # fairseq's dictionary pads PTB to 10,008 symbols: 281 parameters per extra symbol
    padded = AwdLstmModel.build_model(cfg, SimpleNamespace(target_dictionary=dictionary_of_size(vocab + 8)))
    assert sum(p.numel() for p in padded.parameters()) == authors + 8 * (cfg.emsize + 1)


def test_named_architectures_carry_the_published_settings():
    ptb, wt2 = arch_cfg(awd_lstm_mos_ptb), arch_cfg(awd_lstm_mos_wt2)
    assert (ptb.emsize, ptb.nhid, ptb.nhidlast, ptb.n_experts, ptb.dropouti, ptb.dropouth, ptb.dropoutl,
            ptb.dropout, ptb.dropoute, ptb.wdrop) == (280, 960, 620, 15, 0.4, 0.225, 0.29, 0.4, 0.1, 0.5)
    assert (wt2.emsize, wt2.nhid, wt2.nhidlast, wt2.n_experts, wt2.dropouti, wt2.dropouth, wt2.dropoutl) == (
        300, 1150, 650, 15, 0.55, 0.2, 0.29)
    given = argparse.Namespace(n_experts=5)  # explicit options win over the architecture
    awd_lstm_mos_ptb(given)
    assert given.n_experts == 5 and given.nhidlast == 620


def test_dropoutl_defaults_to_dropouth_like_the_authors_code():
    dec = AwdLstmDecoder(tiny_cfg(dropoutl=-1.0, dropouth=0.15), dictionary_of_size(24))
    assert dec.mixture_of_softmaxes.latent_dropout.p == 0.15


@pytest.mark.parametrize("kw,message", [
    (dict(splits="10"), "cannot be combined: pass --splits none"),
    (dict(n_experts=0, nhidlast=7), "--nhidlast sizes the last layer of a mixture of softmaxes"),
    (dict(dropoutl=1.0), "--dropoutl must be in"),
])
def test_bad_combinations_are_user_errors(kw, message):
    with pytest.raises(AwdUserError, match=re.escape(message)):
        AwdLstmDecoder(tiny_cfg(**kw), dictionary_of_size(24))


def test_qrnn_stack_takes_the_same_head():
    cfg = model_cfg(AwdQrnnConfig, emsize=6, nhid=8, nlayers=2, nhidlast=5, n_experts=2)
    dec = AwdQrnnDecoder(cfg, dictionary_of_size(24)).eval()
    out, extra = dec(torch.randint(4, 24, (2, 6)))
    assert out.shape == (2, 6, 24) and extra["raw_out"].shape == (2, 6, 5)
    assert torch.allclose(out.logsumexp(-1), torch.zeros(2, 6), atol=1e-5)


def test_sampling_through_incremental_decoding():
    torch.manual_seed(0)
    d = dictionary_of_size(30)
    model = AwdLstmModel(AwdLstmDecoder(tiny_cfg(), d)).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(8)  # a peaked distribution, so that the greedy path has clear gaps
    assert_low_temperature_is_greedy(model, d, [d.eos(), 7, 9])


# -- end to end: train, finetune, eval-lm with the pointer ----------------------------------------
def test_fairseq_train_finetune_eval_lm_with_pointer(small_bin, run_cli, tmp_path):
    common = ["--task", "awd_language_modeling", "--arch", "awd_lstm_mos_ptb", "--emsize", "8", "--nhid", "12",
              "--nhidlast", "10", "--n-experts", "3", "--nlayers", "2", "--criterion", "split_cross_entropy",
              "--optimizer", "nt_asgd", "--lr-scheduler", "nt_asgd", "--lr", "20", "--clip-norm", "0.25",
              "--batch-size", "4", "--bptt", "10", "--seed", "1", "--cpu", "--log-format", "simple",
              "--num-workers", "0", "--no-epoch-checkpoints"]
    train = tmp_path / "train"
    run_cli("fairseq-train", small_bin, *common, "--max-update", "4", "--save-dir", train)
    finetune = tmp_path / "finetune"  # finetune.py: restore the best, averaged SGD from the start
    log = run_cli("fairseq-train", small_bin, *common, "--max-update", "3", "--save-dir", finetune,
                  "--restore-file", train / "checkpoint_best.pt", "--reset-optimizer", "--reset-lr-scheduler",
                  "--reset-dataloader", "--reset-meters", "--asgd-from-start", "--stop-min-lr", "0",
                  "--bptt-cap", "80").stdout
    assert "averaged" in log
    ckpt = str(finetune / "checkpoint_best.pt")
    model = assert_eval_lm_pointer_equals_loop(run_cli, small_bin, ckpt)
    assert model.decoder.mixture_of_softmaxes.n_experts == 3 and model.decoder.sizes == [12, 10]


def test_fairseqs_own_cross_entropy_criterion_sees_the_same_distribution():
    """fairseq's ``cross_entropy`` normalises the head's output again (log_softmax of log-probabilities
    changes nothing), so it scores exactly what ``split_cross_entropy`` scores without AR/TAR."""
    from fairseq.criterions.cross_entropy import CrossEntropyCriterion

    from awd_plugins.criterions.split_cross_entropy import SplitCrossEntropyCriterion

    torch.manual_seed(0)
    d = dictionary_of_size(24)
    model = AwdLstmModel(AwdLstmDecoder(tiny_cfg(), d)).eval()
    tokens, targets = torch.randint(4, 24, (2, 7)), torch.randint(4, 24, (2, 7))
    sample = {"net_input": {"src_tokens": tokens}, "target": targets, "ntokens": 14, "nsentences": 2}
    ours, _, _ = SplitCrossEntropyCriterion(None, 0.0, 0.0)(model, sample)
    theirs, _, _ = CrossEntropyCriterion(SimpleNamespace(target_dictionary=d), False)(model, sample)
    assert torch.allclose(ours, theirs, atol=1e-4)
