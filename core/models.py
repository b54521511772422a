"""The zoo's network families. Every model maps a float32 image batch [N, C, H, W] to logits [N, K].

Recurrent models read image rows as time steps. None of them builds an initial hidden state: the
nn.RNN/GRU/LSTM modules default it from the input, so no batch size is ever frozen into an export.
"""

from __future__ import annotations

import torch
from torch import nn


def rows_as_sequence(x: torch.Tensor) -> torch.Tensor:
    """[N, C, H, W] -> [N, H, C*W]: one time step per image row (no constant batch size involved)."""
    return x.permute(0, 2, 1, 3).flatten(2)


_RECURRENT = {"rnn": nn.RNN, "gru": nn.GRU, "lstm": nn.LSTM}


def orthogonal_recurrent_(rnn: nn.RNNBase, hidden: int) -> None:
    """Recurrent weights (every layer, gate and direction) that neither shrink nor blow up a state over
    28 steps: each gate's hidden-to-hidden block starts orthogonal."""
    for name, weight in rnn.named_parameters():
        if name.startswith("weight_hh"):
            for gate in weight.data.chunk(weight.shape[0] // hidden):
                nn.init.orthogonal_(gate)


class RowRNN(nn.Module):
    """Stacked recurrent layers over image rows; the last step's output feeds a linear classifier."""

    def __init__(
        self,
        cell: str,
        in_channels: int,
        width: int,
        num_classes: int,
        hidden: int = 128,
        layers: int = 2,
        dropout: float = 0.0,
        orthogonal: bool = False,
    ):
        super().__init__()
        rnn_cls = _RECURRENT[cell]
        kwargs = {"nonlinearity": "tanh"} if cell == "rnn" else {}
        self.rnn = rnn_cls(
            in_channels * width,
            hidden,
            num_layers=layers,
            batch_first=True,
            dropout=dropout if layers > 1 else 0.0,
            **kwargs,
        )
        if orthogonal:
            orthogonal_recurrent_(self.rnn, hidden)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(hidden, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.rnn(rows_as_sequence(x))
        return self.head(self.dropout(out[:, -1]))


class BiRowRNN(nn.Module):
    """Bidirectional tanh RNN over image rows (the Fashion-MNIST bi-RNN report), then dense -> dropout ->
    ReLU -> dense. The head reads each direction's own final state: the forward direction at the last
    row and the backward direction at the first row (where it finishes), never mixing images."""

    def __init__(
        self,
        in_channels: int,
        width: int,
        num_classes: int,
        hidden: int = 128,
        layers: int = 1,
        fc: int = 512,
        dropout: float = 0.2,
        orthogonal: bool = True,
    ):
        super().__init__()
        self.hidden = hidden
        self.rnn = nn.RNN(
            in_channels * width,
            hidden,
            num_layers=layers,
            batch_first=True,
            bidirectional=True,
            nonlinearity="tanh",
            dropout=dropout if layers > 1 else 0.0,
        )
        if orthogonal:
            orthogonal_recurrent_(self.rnn, hidden)
        self.head = nn.Sequential(
            nn.Linear(2 * hidden, fc), nn.Dropout(dropout), nn.ReLU(inplace=True), nn.Linear(fc, num_classes)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.rnn(rows_as_sequence(x))  # [N, T, 2*hidden]: forward half, then backward half
        h = self.hidden
        return self.head(torch.cat([out[:, -1, :h], out[:, 0, h:]], dim=1))


def _conv_block(cin: int, cout: int, kernel: int, dropout: float = 0.0) -> nn.Sequential:
    layers = [
        nn.Conv2d(cin, cout, kernel, padding=kernel // 2, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    ]
    if dropout:
        layers.append(nn.Dropout2d(dropout))
    layers.append(nn.MaxPool2d(2))
    return nn.Sequential(*layers)


class SmallCNN(nn.Module):
    """CIFAR-10 report CNN: conv5x5->6, conv3x3->16, conv3x3->32 (BN+ReLU+maxpool2), dense 512->120->84->K."""

    def __init__(self, in_channels: int, num_classes: int, dropout: float = 0.0):
        super().__init__()
        self.features = nn.Sequential(_conv_block(in_channels, 6, 5), _conv_block(6, 16, 3), _conv_block(16, 32, 3))
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(32 * 4 * 4, 120),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(120, 84),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(84, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


class CRNN(nn.Module):
    """Fashion-MNIST report CRNN: conv blocks 32/64/128 -> 3-layer LSTM over feature rows -> 128->64->K."""

    def __init__(
        self,
        in_channels: int,
        height: int,
        width: int,
        num_classes: int,
        conv_dropout: float = 0.1,
        hidden: int = 128,
        layers: int = 3,
        dropout: float = 0.2,
    ):
        super().__init__()
        self.features = nn.Sequential(
            _conv_block(in_channels, 32, 3, conv_dropout),
            _conv_block(32, 64, 3, conv_dropout),
            _conv_block(64, 128, 3, conv_dropout),
        )
        feat_w = width // 8
        self.lstm = nn.LSTM(128 * feat_w, hidden, num_layers=layers, batch_first=True, dropout=dropout)
        self.head = nn.Sequential(
            nn.Linear(hidden, 64), nn.ReLU(inplace=True), nn.Dropout(dropout), nn.Linear(64, num_classes)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.lstm(rows_as_sequence(self.features(x)))
        return self.head(out[:, -1])


# Registry builders: (channels, height, width, num_classes, **spec.builder_kwargs) -> module.
def small_cnn(c: int, h: int, w: int, k: int, **kw) -> nn.Module:
    return SmallCNN(c, k, **kw)


def row_rnn(c: int, h: int, w: int, k: int, **kw) -> nn.Module:
    return RowRNN(in_channels=c, width=w, num_classes=k, **kw)


def bi_row_rnn(c: int, h: int, w: int, k: int, **kw) -> nn.Module:
    return BiRowRNN(in_channels=c, width=w, num_classes=k, **kw)


def crnn(c: int, h: int, w: int, k: int, **kw) -> nn.Module:
    return CRNN(c, h, w, k, **kw)
