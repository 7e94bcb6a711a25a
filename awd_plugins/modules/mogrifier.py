"""Mogrifier LSTM layer, Melis, Kočiský & Blunsom 2020, "Mogrifier LSTM" (ICLR 2020,
arXiv:1909.01792), §2 Eq. (1)–(2); the details follow the authors' code (deepmind/lamb,
``tiled_lstm.py``: ``_do_feature_masking``).

Before every LSTM step the input x (m-dim) and the previous output h_prev (n-dim) gate each
other for r rounds, x⁻¹ = x, h⁰ = h_prev:

    x^i      = 2σ(Q^i h^{i−1}_prev + b^i) ⊙ x^{i−2}      odd i  ∈ [1, r]
    h^i_prev = 2σ(R^i x^{i−1} + b^i)      ⊙ h^{i−2}_prev  even i ∈ [1, r]

then an ordinary LSTM step on the last x^i and h^i_prev. Each round has its own matrix
(Q^i ∈ R^{m×n}, R^i ∈ R^{n×m}), full rank or, with ``rank`` k > 0, the product of an
n×k and a k×m factor (the paper's low-rank variant); the biases are lamb's (zero at the
start). r = 0 is exactly :class:`torch.nn.LSTM` on the same weights: the LSTM weights
have nn.LSTM's names, shapes and gate order (i, f, g, o).

Options of the authors' cell kept here: ``cap_input_gate`` (c = f⊙c + min(i, 1−f)⊙g, lamb's
default and the published configs') and the *state dropout*: one Bernoulli mask per stream
for the whole window, applied to h_prev before the rounds (lamb's ``state_dropout``), and
``forget_bias`` added to the forget gate's initial bias (lamb's ``forget_bias``: 1.0).

The rounds depend on h_prev, so no part of a step after round 1 can be computed for all
time steps at once; what does not depend on the step is hoisted out of the loop (the
concatenated [W_ih W_hh] matrix and summed biases, the state-dropout mask, and for r = 0
the whole input projection W_ih x_t + b for every t). Each step is then r small matrix
products with their σ-gates, ONE (B, m+n)×(m+n, 4n) product for all four gates, and two
fused activations (a σ over the gate block, a tanh on the candidate).
"""

from typing import List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn


class MogrifierGate(nn.Module):
    """One round's gate 2σ(M y + b), M full rank (from_dim → to_dim) or rank-k factored."""

    def __init__(self, from_dim: int, to_dim: int, rank: int = 0):
        super().__init__()
        self.rank = rank
        if rank > 0:
            self.down = nn.Linear(from_dim, rank, bias=False)  # n×k (or m×k) factor
            self.up = nn.Linear(rank, to_dim)  # k×m (or k×n) factor and b^i
            nn.init.zeros_(self.up.bias)
        else:
            self.proj = nn.Linear(from_dim, to_dim)
            nn.init.zeros_(self.proj.bias)

    def matrix(self) -> torch.Tensor:
        """M (to_dim × from_dim), for tests and inspection."""
        return self.up.weight @ self.down.weight if self.rank > 0 else self.proj.weight

    def bias(self) -> torch.Tensor:
        return self.up.bias if self.rank > 0 else self.proj.bias

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        pre = self.up(self.down(y)) if self.rank > 0 else self.proj(y)
        return 2.0 * torch.sigmoid(pre)


class MogrifierLSTM(nn.Module):
    """A single-layer Mogrifier LSTM over a time-major window: (T×B×m, ((1×B×n), (1×B×n))) → (T×B×n, state)."""

    def __init__(self, input_size: int, hidden_size: int, rounds: int = 5, rank: int = 0,
                 cap_input_gate: bool = False, state_dropout: float = 0.0, forget_bias: float = 0.0):
        super().__init__()
        if rounds < 0 or rank < 0:
            raise ValueError(f"mogrifier rounds and rank must be >= 0, got {rounds} and {rank}")
        if not 0.0 <= state_dropout < 1.0:
            raise ValueError(f"state dropout must be in [0, 1), got {state_dropout}")
        self.input_size, self.hidden_size = input_size, hidden_size
        self.rounds, self.rank = rounds, rank
        self.cap_input_gate = cap_input_gate
        self.state_dropout = state_dropout
        # nn.LSTM's own parameters (names, shapes, gate order i, f, g, o and initialisation)
        lstm = nn.LSTM(input_size, hidden_size)
        self.weight_ih_l0, self.weight_hh_l0 = lstm.weight_ih_l0, lstm.weight_hh_l0
        self.bias_ih_l0, self.bias_hh_l0 = lstm.bias_ih_l0, lstm.bias_hh_l0
        with torch.no_grad():
            self.bias_ih_l0[hidden_size : 2 * hidden_size] += forget_bias  # gate order i, f, g, o
        # round i (1-based): odd → Q^i gates x from h, even → R^i gates h from x
        self.rounds_gates = nn.ModuleList(
            MogrifierGate(hidden_size, input_size, rank) if i % 2 == 1 else MogrifierGate(input_size, hidden_size, rank)
            for i in range(1, rounds + 1)
        )

    def mogrify(self, x: torch.Tensor, h: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """The r rounds of Eq. (1)–(2) on one step's x (B×m) and h_prev (B×n)."""
        for i, gate in enumerate(self.rounds_gates, start=1):
            if i % 2 == 1:
                x = gate(h) * x
            else:
                h = gate(x) * h
        return x, h

    def forward(self, x: torch.Tensor, state: Tuple[torch.Tensor, torch.Tensor]):
        h, c = state[0][0], state[1][0]  # B×n each
        n = self.hidden_size
        mask: Optional[torch.Tensor] = None
        if self.training and self.state_dropout > 0.0:
            # one mask per stream for the whole window (shared over time steps)
            mask = h.new_empty(h.shape).bernoulli_(1.0 - self.state_dropout) / (1.0 - self.state_dropout)
        bias = self.bias_ih_l0 + self.bias_hh_l0
        if self.rounds == 0:
            # nothing gates x: its projection for every step is one batched product
            x_gates = F.linear(x, self.weight_ih_l0, bias)  # T×B×4n
        else:
            weight = torch.cat([self.weight_ih_l0, self.weight_hh_l0], dim=1).t()  # (m+n)×4n
        outputs: List[torch.Tensor] = []
        for t in range(x.size(0)):
            h_in = h if mask is None else h * mask
            if self.rounds == 0:
                gates = torch.addmm(x_gates[t], h_in, self.weight_hh_l0.t())  # B×4n
            else:
                x_t, h_in = self.mogrify(x[t], h_in)
                gates = torch.addmm(bias, torch.cat([x_t, h_in], dim=1), weight)
            sig = torch.sigmoid(gates)
            i, f, o = sig[:, :n], sig[:, n : 2 * n], sig[:, 3 * n :]
            g = torch.tanh(gates[:, 2 * n : 3 * n])
            if self.cap_input_gate:
                i = torch.minimum(i, 1.0 - f)
            c = torch.addcmul(f * c, i, g)
            h = o * torch.tanh(c)
            outputs.append(h)
        return torch.stack(outputs), (h.unsqueeze(0), c.unsqueeze(0))

    def extra_repr(self) -> str:
        return (f"{self.input_size}, {self.hidden_size}, rounds={self.rounds}, rank={self.rank}, "
                f"cap_input_gate={self.cap_input_gate}, state_dropout={self.state_dropout}")
