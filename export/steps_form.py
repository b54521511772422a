"""The "steps" graph form of the tanh-RNN models (rnn, birnn): the recurrence written out step by step
with as few graph nodes per step as the arithmetic allows, for ONNX Runtime.

Why: at batch 1 a recurrent model's time is per-node overhead, not arithmetic (28 rows x 128 hidden is
~1 us of FLOPs per step). torch.onnx's dynamo exporter unrolls nn.RNN into 6 nodes per step and layer
(Slice, Squeeze, MatMul, Add, Add, Tanh: 359 nodes for rnn); its torchscript exporter writes ONNX's RNN
node, which ORT runs 3-4x slower than the unrolled graph at batch 256. Here each layer's input
projection for all 28 steps is one MatMul with both biases folded into one Add, one Split cuts it into
2-D per-step blocks, and a step is Gemm(h, W_hh, x_t) then Tanh: 2 nodes per step and layer. Measured
on 2 Xeon cores (benchmarks/recurrent_forms.py): rnn at batch 1 in 0.12 ms against the dynamo graph's
0.23 ms, and faster at batch 256 too.

The module computes exactly what nn.RNN computes (the same weights, summed in another order: logits
within ~1e-6), and goes through the same parity validation as the other exporters.
"""

from __future__ import annotations

import torch
from torch import nn

from edgecls.models import BiRowRNN, RowRNN, rows_as_sequence


class StepwiseRNN(nn.Module):
    """A trained RowRNN (tanh cell) or BiRowRNN, with its recurrence unrolled into Gemm + Tanh steps."""

    def __init__(self, model: nn.Module):
        super().__init__()
        rnn = model.rnn
        self.model, self.layers, self.hidden = model, rnn.num_layers, rnn.hidden_size
        self.directions = ("", "_reverse") if rnn.bidirectional else ("",)
        for layer in range(self.layers):
            for d in self.directions:
                w_ih, w_hh = getattr(rnn, f"weight_ih_l{layer}{d}"), getattr(rnn, f"weight_hh_l{layer}{d}")
                bias = getattr(rnn, f"bias_ih_l{layer}{d}") + getattr(rnn, f"bias_hh_l{layer}{d}")
                self.register_buffer(f"w_ih_t{layer}{d}", w_ih.detach().t().contiguous())
                self.register_buffer(f"w_hh_t{layer}{d}", w_hh.detach().t().contiguous())
                self.register_buffer(f"bias{layer}{d}", bias.detach())

    def _direction(self, seq: torch.Tensor, layer: int, d: str) -> list[torch.Tensor]:
        """The hidden state after each step, in time order, of one layer and direction."""
        steps_count = seq.shape[1]
        projected = torch.matmul(seq, getattr(self, f"w_ih_t{layer}{d}")) + getattr(self, f"bias{layer}{d}")
        steps = torch.split(projected.flatten(1), self.hidden, dim=1)  # [N, T*H] -> T blocks of [N, H]
        w_hh_t = getattr(self, f"w_hh_t{layer}{d}")
        order = range(steps_count - 1, -1, -1) if d else range(steps_count)
        outs: list = [None] * steps_count
        h = None
        for t in order:  # the first step's state is zero: tanh(x_t) alone
            h = torch.tanh(steps[t]) if h is None else torch.tanh(torch.addmm(steps[t], h, w_hh_t))
            outs[t] = h
        return outs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        seq = rows_as_sequence(x)
        for layer in range(self.layers):
            outs = [self._direction(seq, layer, d) for d in self.directions]
            if layer < self.layers - 1:
                seq = torch.stack([torch.cat(step, 1) if len(step) > 1 else step[0] for step in zip(*outs)], 1)
        if isinstance(self.model, BiRowRNN):  # each direction's own final state, as BiRowRNN.forward reads it
            return self.model.head(torch.cat([outs[0][-1], outs[1][0]], dim=1))
        return self.model.head(self.model.dropout(outs[0][-1]))


def stepwise(model: nn.Module) -> StepwiseRNN:
    """The steps form of `model`; a one-line ValueError for a model it does not apply to (GRU and LSTM
    cells keep ORT's fused nodes, which beat any unrolled form of theirs: see the module docstring)."""
    rnn = getattr(model, "rnn", None)
    if isinstance(model, (RowRNN, BiRowRNN)) and isinstance(rnn, nn.RNN) and rnn.nonlinearity == "tanh":
        return StepwiseRNN(model).eval()
    raise ValueError("the steps form is for the tanh RNN models (rnn, birnn); GRU, LSTM and conv models keep theirs")
