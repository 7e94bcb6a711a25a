"""Mixture of Softmaxes output head, Yang, Dai, Salakhutdinov & Cohen 2018,
"Breaking the Softmax Bottleneck: A High-Rank RNN Language Model" (arXiv:1711.03953).

Eq. (3) of the paper, with the parametrisation of the authors' code (zihangdai/mos,
``model.py``): for the last layer's (dropped) output g_t ∈ R^{nhidlast},

    π_{t,k}  = softmax_k(w_k^T g_t)                       prior, no bias
    h_{t,k}  = tanh(W_k g_t + b_k)  ∈ R^{emsize}            latent context of expert k
    P(w|c_t) = Σ_k π_{t,k} · softmax_w(E h_{t,k} + b)_w     E, b: the (tied) decoder

with locked dropout ``dropoutl`` on the K latent vectors h_{t,·} (one mask per
stream, shared by all time steps). The authors sum probabilities and take
log(p + 1e-8); here the sum is a log-sum-exp of log-probabilities, which is the
same number wherever p ≫ 1e-8 and stays finite everywhere else. The output is
log-probabilities (like the split softmax's), in fp32 under --fp16.

The decoder weight and bias are passed in at call time, like
:class:`~awd_plugins.modules.SplitSoftmax`, so tying stays the decoder's business.
"""

import torch
import torch.nn.functional as F
from torch import nn

from awd_plugins.modules.locked_dropout import LockedDropout
from awd_plugins.modules.split_softmax import _at_least_fp32


class MixtureOfSoftmaxes(nn.Module):
    def __init__(self, input_dim: int, embed_dim: int, n_experts: int, dropoutl: float = 0.0):
        super().__init__()
        self.n_experts = n_experts
        self.embed_dim = embed_dim
        self.prior = nn.Linear(input_dim, n_experts, bias=False)  # w_k, stacked
        self.latent = nn.Linear(input_dim, n_experts * embed_dim)  # W_k, b_k, stacked
        self.latent_dropout = LockedDropout(dropoutl)

    def log_prob(self, features: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        """``features`` B×T×nhidlast (batch-first, as fairseq's decoders return them) → B×T×V log-probs."""
        B, T, _ = features.shape
        latent = torch.tanh(self.latent(features))  # B×T×(K·E)
        # locked dropout wants time first: one mask per stream, constant along time
        latent = self.latent_dropout(latent.transpose(0, 1)).transpose(0, 1)
        latent = latent.reshape(B, T, self.n_experts, self.embed_dim)  # B×T×K×E
        expert_lp = F.log_softmax(_at_least_fp32(F.linear(latent, weight, bias)), dim=-1)  # B×T×K×V
        prior_lp = F.log_softmax(_at_least_fp32(self.prior(features)), dim=-1)  # B×T×K
        return torch.logsumexp(expert_lp + prior_lp.unsqueeze(-1), dim=2)  # B×T×V

    def nll(self, features: torch.Tensor, targets: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor):
        """−log p(target) per position, flattened (B·T,), for ``features`` B×T×nhidlast and ``targets`` B×T."""
        lp = self.log_prob(features, weight, bias)
        return -lp.reshape(-1, lp.size(-1)).gather(1, targets.reshape(-1, 1)).squeeze(1)

    def extra_repr(self) -> str:
        return f"n_experts={self.n_experts}"
