"""Models of the learning tasks.

* :class:`DigitsMLP` — small default for the offline 8x8 digits task.
* :class:`MnistCNN` — the paper's MNIST/Fashion-MNIST CNN (51,710 parameters, reference §3.1).
* :func:`cifar_resnet18` — ResNet-18 in its CIFAR form (11,173,962 parameters, reference §3.2),
  built from torchvision's ``resnet18``.
* :class:`TextRNN` — embedding + 2-layer bidirectional LSTM + linear for AG-News (our design:
  the reference has no text model).

Parameter registration order matters: the server flattens ``parameters()`` in this order and
SignGuard samples contiguous windows of that vector, so layers are registered in forward order.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

__all__ = ["DigitsMLP", "FastMaxPool2d", "MnistCNN", "cifar_resnet18", "TextRNN", "count_parameters"]


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters (buffers such as BN running stats excluded)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


class DigitsMLP(nn.Module):
    """64-64-10 MLP for scikit-learn's 8x8 digits (4,810 parameters).

    Small enough that a whole simulated round takes milliseconds; used by the fast tests and
    as the offline default task.

    Parameters
    ----------
    hidden : int, default 64
        Width of the hidden layer.
    num_classes : int, default 10
    """

    def __init__(self, hidden: int = 64, num_classes: int = 10) -> None:
        super().__init__()
        self.fc1 = nn.Linear(64, hidden)
        self.fc2 = nn.Linear(hidden, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.relu(self.fc1(torch.flatten(x, 1))))


class _ChannelsLastMaxPool(torch.autograd.Function):
    """Max-pool forward through the channels-last kernel, backward through torch's own NCHW one."""

    @staticmethod
    def forward(ctx, x, kernel_size, stride, padding, dilation, ceil_mode):
        out, indices = torch.ops.aten.max_pool2d_with_indices(
            x.contiguous(memory_format=torch.channels_last), kernel_size, stride, padding, dilation, ceil_mode
        )
        indices = indices.contiguous()
        ctx.save_for_backward(x, indices)
        ctx.settings = (kernel_size, stride, padding, dilation, ceil_mode)
        ctx.mark_non_differentiable(indices)
        return out.contiguous()

    @staticmethod
    def backward(ctx, grad_out):
        x, indices = ctx.saved_tensors
        # The very op autograd runs after F.max_pool2d: with the same indices (each window's
        # first maximum, in both layouts) the gradient is the same to the bit.
        grad = torch.ops.aten.max_pool2d_with_indices_backward(grad_out.contiguous(), x, *ctx.settings, indices)
        return grad, None, None, None, None, None


class FastMaxPool2d(nn.MaxPool2d):
    """``nn.MaxPool2d`` whose forward on the CPU runs torch's channels-last kernel.

    Why by hand: on one CPU thread, torch's NCHW max-pool with indices took 1.34 ms for the
    MNIST CNN's first pooling (50 x 8 x 24 x 24), its channels-last kernel 0.48 ms including both
    layout copies, and the pooling forward was a third of a whole FedSGD client step (torch
    profiler).  Simply pooling in channels-last made the step slower (its backward); so the
    forward uses the channels-last kernel and the backward is torch's NCHW one with the same
    indices.  Outputs and gradients are bitwise those of ``nn.MaxPool2d`` (tested, ties
    included), so results do not depend on which class ran.  Elsewhere (GPU, other layouts,
    ``return_indices``, under ``torch.func`` transforms) it is ``nn.MaxPool2d``.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if (x.device.type != "cpu" or x.dim() != 4 or self.return_indices or not x.is_contiguous()
                or torch._C._are_functorch_transforms_active()):  # vmap/grad (clients.batched): torch's own op
            return super().forward(x)
        pair = nn.modules.utils._pair
        settings = (list(pair(self.kernel_size)), list(pair(self.stride if self.stride is not None else self.kernel_size)),
                    list(pair(self.padding)), list(pair(self.dilation)), bool(self.ceil_mode))
        if not (torch.is_grad_enabled() and x.requires_grad):
            return torch.ops.aten.max_pool2d(x.contiguous(memory_format=torch.channels_last), *settings).contiguous()
        return _ChannelsLastMaxPool.apply(x, *settings)


class MnistCNN(nn.Module):
    """The SignGuard paper's CNN for 1x28x28 inputs: 51,710 parameters.

    conv1 1→8 5x5 → ReLU → maxpool 2; conv2 8→16 3x3 pad 1 → ReLU → maxpool 2;
    conv3 16→32 3x3 pad 1 → ReLU → maxpool 2; fc1 288→120 → ReLU → dropout 0.5;
    fc2 120→84 → ReLU → dropout 0.5; fc3 84→10.

    Parameters
    ----------
    num_classes : int, default 10
    """

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, kernel_size=5)
        self.conv2 = nn.Conv2d(8, 16, kernel_size=3, padding=1)
        self.conv3 = nn.Conv2d(16, 32, kernel_size=3, padding=1)
        self.fc1 = nn.Linear(32 * 3 * 3, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, num_classes)
        self.pool = FastMaxPool2d(2)
        self.dropout = nn.Dropout(0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(torch.relu(self.conv1(x)))  # 8x24x24 -> 8x12x12
        x = self.pool(torch.relu(self.conv2(x)))  # 16x12x12 -> 16x6x6
        x = self.pool(torch.relu(self.conv3(x)))  # 32x6x6 -> 32x3x3
        x = torch.flatten(x, 1)
        x = self.dropout(torch.relu(self.fc1(x)))
        x = self.dropout(torch.relu(self.fc2(x)))
        return self.fc3(x)


def cifar_resnet18(num_classes: int = 10) -> nn.Module:
    """ResNet-18 in the CIFAR form used by the paper (11,173,962 parameters for 10 classes).

    torchvision's ImageNet ResNet-18 with two changes: the stem is a 3x3 stride-1 conv
    (3→64, no bias) instead of 7x7 stride 2, and the stem max-pool is removed.  A 32x32 input
    then reaches layer4 at 4x4, where torchvision's adaptive average pool equals the 4x4
    average pool of the CIFAR variant.  The blocks (stride in the first 3x3 conv, 1x1 conv + BN
    shortcut when the shape changes, bias-free convs) are the same as in the common CIFAR code,
    so the parameter count is exactly the reference's: 11,181,642 − 9,408 (7x7 stem) + 1,728.
    State-dict keys follow torchvision (``layerN.M.downsample`` rather than ``shortcut``).

    Parameters
    ----------
    num_classes : int, default 10

    Returns
    -------
    torch.nn.Module
    """
    from torchvision.models import resnet18

    model = resnet18(num_classes=num_classes)
    model.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
    # Same initialisation torchvision applies to its own convs, so a seeded build is reproducible
    # and consistent with the rest of the network.
    nn.init.kaiming_normal_(model.conv1.weight, mode="fan_out", nonlinearity="relu")
    model.maxpool = nn.Identity()
    return model


class TextRNN(nn.Module):
    """Embedding + 2-layer bidirectional LSTM + linear classifier.

    Padding id 0 is ignored (``padding_idx=0``; packed sequences on CUDA, the equivalent padded
    unrolling on the CPU: :meth:`_last_hidden_unrolled`), so a text's prediction does not depend
    on how much padding follows it.  The classifier reads the last layer's
    final hidden state of both directions.

    Parameters
    ----------
    vocab_size : int
        Rows of the embedding table (``<pad>`` and ``<unk>`` included).
    embed_dim, hidden_size, num_layers : int
        LSTM sizes.
    num_classes : int, default 4
    dropout : float, default 0.0
        Dropout between LSTM layers.
    """

    def __init__(
        self,
        vocab_size: int,
        embed_dim: int = 64,
        hidden_size: int = 64,
        num_layers: int = 2,
        num_classes: int = 4,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, embed_dim, padding_idx=0)
        self.lstm = nn.LSTM(
            embed_dim,
            hidden_size,
            num_layers=num_layers,
            bidirectional=True,
            batch_first=True,
            dropout=dropout if num_layers > 1 else 0.0,
        )
        self.fc = nn.Linear(2 * hidden_size, num_classes)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        # Texts are right-padded with 0; every encoded text has at least one token.
        lengths = (tokens != 0).sum(dim=1).clamp(min=1)
        if tokens.device.type == "cuda":  # cuDNN runs packed sequences in fused kernels
            packed = pack_padded_sequence(self.embedding(tokens), lengths.cpu(), batch_first=True, enforce_sorted=False)
            _, (h_n, _) = self.lstm(packed)
            # h_n: (num_layers * 2, B, H); the last two rows are the top layer's two directions.
            return self.fc(torch.cat([h_n[-2], h_n[-1]], dim=1))
        return self.fc(self._last_hidden_unrolled(tokens, lengths))

    def _last_hidden_unrolled(self, tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """The packed LSTM's final hidden states of the top layer, from right-padded batches.

        Why by hand: on the CPU, ``nn.LSTM`` over a packed sequence slices its precomputed input
        gates once per time step, and autograd's backward of every slice zero-fills a tensor of
        the whole sequence: quadratic in the length, ~75% of a FedSGD step on AG-News (torch
        profiler: ``aten::fill_`` and ``add_`` under ``SliceBackward0``).  Each layer and
        direction here is one padded single-layer LSTM call (``torch.lstm``, the kernel
        ``nn.LSTM`` itself uses, with the module's own weights): the reverse direction reads each
        text's tokens reversed with its padding kept at the end, so neither direction ever reads
        a padding step before a real one; the final state is the output at the text's last real
        step.  The same function as the packed module (equal up to float32 rounding, tested),
        3x faster on one core.
        """
        lstm = self.lstm
        batch, steps = tokens.shape[0], int(lengths.max())
        # Position t of row b in the reversed text: lengths[b] - 1 - t for real steps, t for padding.
        t = torch.arange(steps, device=tokens.device).expand(batch, steps)
        last = (lengths - 1).view(batch, 1)
        reverse = torch.where(t <= last, last - t, t)
        x = self.embedding(tokens[:, :steps])
        zeros = x.new_zeros(1, batch, lstm.hidden_size)
        final: list[torch.Tensor] = []
        for layer in range(lstm.num_layers):
            outputs = []
            for suffix in ("", "_reverse"):
                weights = [getattr(lstm, f"{name}_l{layer}{suffix}") for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
                source = x if not suffix else x.gather(1, reverse.unsqueeze(-1).expand_as(x))
                out, _, _ = torch.lstm(source, (zeros, zeros), weights, True, 1, 0.0, self.training, False, True)
                if layer == lstm.num_layers - 1:
                    final.append(out.gather(1, last.unsqueeze(-1).expand(batch, 1, out.shape[2])).squeeze(1))
                # Back to text order (the reversal is its own inverse) for the next layer's input.
                outputs.append(out if not suffix else out.gather(1, reverse.unsqueeze(-1).expand_as(out)))
            x = torch.cat(outputs, dim=2)
            if lstm.dropout and self.training and layer < lstm.num_layers - 1:
                x = F.dropout(x, lstm.dropout, training=True)
        return torch.cat(final, dim=1)
