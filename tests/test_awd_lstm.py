"""AWD-LSTM against the golden vectors of salesforce/awd-lstm-lm (stock and perturbed weights)."""

import pytest
import torch

from awd_plugins.errors import AwdUserError
from awd_plugins.models.awd_lstm import AwdLstmConfig, AwdLstmDecoder
from _helpers import dictionary_of_size, model_cfg


def golden_decoder(g, state_dict):
    c = g["config"]
    cfg = model_cfg(AwdLstmConfig, emsize=c["ninp"], nhid=c["nhid"], nlayers=c["nlayers"], dropout=c["dropout"],
                    dropouth=c["dropouth"], dropouti=c["dropouti"], dropoute=c["dropoute"], wdrop=c["wdrop"])
    dec = AwdLstmDecoder(cfg, dictionary_of_size(c["ntoken"]))
    mapped = {}
    for key, value in state_dict.items():
        if key == "encoder.weight":
            mapped["embed_tokens.weight"] = value
        elif key == "decoder.weight":
            mapped["output_projection.weight"] = value
        elif key == "decoder.bias":
            mapped["output_projection.bias"] = value
        else:  # rnns.l.module.weight_hh_l0_raw → rnns.l.module.weight_hh_l0
            mapped[key.replace("_raw", "")] = value
    dec.load_state_dict(mapped)
    return dec.eval()


@pytest.mark.parametrize("variant", ["stock", "perturbed"])
def test_golden_two_windows_with_carried_state(golden, variant):
    g = golden("awd_lstm.pt")
    ref = g if variant == "stock" else g["perturbed"]
    dec = golden_decoder(g, ref["state_dict"])
    state = [tuple(hc) for hc in g["hidden_init"]]
    with torch.no_grad():
        for window in ("w1", "w2"):
            raw, dropped, state = dec.run(g[f"tokens_{window}"], state)
            want = ref[window]
            T, B = g[f"tokens_{window}"].shape
            assert torch.allclose(raw, want["raw_outputs"][-1], atol=1e-5)
            assert torch.allclose(dropped.reshape(T * B, -1), want["output"], atol=1e-5)
            logprobs = dec.get_normalized_probs((dec.output_layer(dropped), None), log_probs=True)
            assert torch.allclose(logprobs.reshape(T * B, -1), want["logprobs"], atol=1e-5)
            for (h, c), (wh, wc) in zip(state, want["hidden"]):
                assert torch.allclose(h, wh, atol=1e-5) and torch.allclose(c, wc, atol=1e-5)


def test_layer_sizes_tying_and_init():
    dec = AwdLstmDecoder(model_cfg(AwdLstmConfig, emsize=8, nhid=16, nlayers=3), dictionary_of_size(40))
    assert dec.sizes == [16, 16, 8]
    assert dec.output_projection.weight is dec.embed_tokens.weight
    assert dec.embed_tokens.weight.abs().max() <= 0.1 and torch.all(dec.output_projection.bias == 0)
    untied = AwdLstmDecoder(model_cfg(AwdLstmConfig, emsize=8, nhid=16, untie_weights=True), dictionary_of_size(40))
    assert untied.sizes[-1] == 16 and untied.output_projection.weight is not untied.embed_tokens.weight


@pytest.mark.parametrize("vocab,expected", [(10000, 24_221_600), (33278, 33_556_078)])
def test_published_parameter_counts(vocab, expected):
    with torch.device("meta"):
        dec = AwdLstmDecoder(model_cfg(AwdLstmConfig), dictionary_of_size(vocab))
    assert sum(p.numel() for p in dec.parameters()) == expected  # REFERENCE §2.6


def test_eval_is_independent_of_window_length():
    torch.manual_seed(0)
    dec = AwdLstmDecoder(model_cfg(AwdLstmConfig, emsize=8, nhid=12, nlayers=2), dictionary_of_size(30)).eval()
    tokens = torch.randint(4, 30, (12, 2))
    with torch.no_grad():
        whole, _, _ = dec.run(tokens, dec.init_state(2, dec.embed_tokens.weight))
        a, _, s = dec.run(tokens[:5], dec.init_state(2, dec.embed_tokens.weight))
        b, _, _ = dec.run(tokens[5:], s)
    assert torch.allclose(whole, torch.cat([a, b]), atol=1e-6)


@pytest.mark.parametrize("field,value", [("dropout", 1.5), ("wdrop", -0.1), ("nlayers", 0)])
def test_out_of_range_options_are_user_errors(field, value):
    with pytest.raises(AwdUserError, match=field):
        AwdLstmDecoder(model_cfg(AwdLstmConfig, **{field: value}), dictionary_of_size(30))
