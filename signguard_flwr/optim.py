"""Server-side optimizer that applies the aggregated update to the global model.

The paper trains with FedSGD: every client returns one mini-batch gradient and the server
steps ``torch.optim.SGD(lr=0.1, momentum=0.9, weight_decay=5e-4)`` with the aggregate as the
gradient.  Clients here return *models*; the strategy turns them into updates
``Δ_i = w_i − w_global`` (for a FedSGD client with a unit step, ``Δ_i = −∇_i``), aggregates them
into ``Δ``, and this optimizer treats ``−Δ`` as the gradient.  With ``lr=1``, no momentum and
no weight decay that is plain application ``w ← w + Δ`` (the default).

We drive torch's own SGD over one flat parameter instead of re-deriving the heavy-ball
formula, so the paper's rule is reproduced to the bit:
``v ← μ·v + (g + λ·w)``, ``w ← w − lr·v`` with ``g = −Δ``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .rules.base import check_float, check_int

__all__ = ["ServerOptimizer"]


class ServerOptimizer:
    """Apply aggregated updates with SGD (momentum, weight decay, step-wise LR decay).

    Parameters
    ----------
    lr : float, default 1.0
        Server learning rate (the paper: 0.1 with FedSGD clients that take a unit step).
    momentum : float, default 0.0
        Heavy-ball momentum (paper: 0.9).
    weight_decay : float, default 0.0
        L2 penalty added to the pseudo-gradient (paper: 5e-4).
    nesterov : bool, default False
        Nesterov momentum (torch semantics).
    milestones : sequence of int, default ()
        Rounds after which the LR is multiplied by ``gamma`` (the reference decays ×0.1 at
        epoch 100, i.e. after round ``100 · rounds_per_epoch``).
    gamma : float, default 0.1
        LR decay factor at each milestone.
    """

    def __init__(
        self,
        lr: float = 1.0,
        momentum: float = 0.0,
        weight_decay: float = 0.0,
        nesterov: bool = False,
        milestones: Sequence[int] = (),
        gamma: float = 0.1,
    ) -> None:
        self.lr = check_float("server_lr", lr, minimum=0.0, strict_min=True)
        self.momentum = check_float("server_momentum", momentum, minimum=0.0, maximum=1.0, strict_max=True)
        self.weight_decay = check_float("server_weight_decay", weight_decay, minimum=0.0)
        if nesterov and self.momentum == 0.0:
            raise ValueError("server_nesterov requires server_momentum > 0")
        self.nesterov = bool(nesterov)
        self.milestones = tuple(sorted(check_int("lr_milestones", m, minimum=1) for m in milestones))
        self.gamma = check_float("lr_gamma", gamma, minimum=0.0, strict_min=True)
        self._param: torch.nn.Parameter | None = None
        self._opt: torch.optim.SGD | None = None
        self.steps = 0
        self._undo: tuple[int, dict[str, torch.Tensor] | None] | None = None

    @property
    def is_plain(self) -> bool:
        """True when a step is exactly ``w + Δ`` (no state, no scaling)."""
        return self.lr == 1.0 and self.momentum == 0.0 and self.weight_decay == 0.0 and not self.milestones

    def current_lr(self, server_round: int | None = None) -> float:
        """LR for the next step: decayed once per milestone already passed.

        With ``server_round`` the milestones count rounds (round r has ``r − 1`` rounds behind
        it, so a round the server skipped still advances the schedule); without it they count
        the steps taken so far.
        """
        done = self.steps if server_round is None else server_round - 1
        passed = sum(1 for m in self.milestones if done >= m)
        return self.lr * self.gamma**passed

    def step(self, weights: torch.Tensor, update: torch.Tensor, server_round: int | None = None) -> torch.Tensor:
        """Return the new flat weights after applying ``update`` to ``weights``.

        ``weights`` is the flat global model sent this round (the optimizer keeps no copy of
        the model between rounds other than the momentum buffer, so a caller that changes the
        model between rounds is respected).
        """
        if weights.shape != update.shape:
            raise ValueError(f"weights {tuple(weights.shape)} and update {tuple(update.shape)} differ")
        if self.is_plain:
            self._undo = (self.steps, None)
            self.steps += 1
            return weights + update
        if self._param is None or self._param.shape != weights.shape or self._param.device != weights.device:
            self._new_optimizer(weights.detach().clone())
        assert self._opt is not None
        # What rollback() restores: the momentum buffer before this step (a copy of d values).
        state = self._opt.state.get(self._param, {})
        buffer = state.get("momentum_buffer")
        self._undo = (self.steps, None if buffer is None else {"momentum_buffer": buffer.detach().clone()})
        with torch.no_grad():
            self._param.copy_(weights)
        self._param.grad = (-update).to(self._param.dtype)
        for group in self._opt.param_groups:
            group["lr"] = self.current_lr(server_round)
        self._opt.step()
        self.steps += 1
        return self._param.detach().clone()

    def rollback(self) -> None:
        """Undo the last :meth:`step`: momentum buffer and step count as they were before it.

        The strategy calls it when the stepped model is rejected (non-finite in the model's own
        dtype), so a discarded round leaves no trace in the optimizer's state.

        Raises
        ------
        RuntimeError
            No step to undo (none taken, or already rolled back).
        """
        if self._undo is None:
            raise RuntimeError("no server step to roll back")
        steps, buffer = self._undo
        self._undo = None
        self.steps = steps
        if self._opt is not None and self._param is not None:
            if buffer is None:
                self._opt.state.pop(self._param, None)
            else:
                self._opt.state[self._param]["momentum_buffer"] = buffer["momentum_buffer"]

    def state_dict(self) -> dict:
        """Momentum buffer and step count (for checkpoints)."""
        state = {"steps": self.steps}
        if self._opt is not None:
            state["optimizer"] = self._opt.state_dict()
        return state

    def load_state_dict(self, state: dict, device: torch.device | str | None = None) -> None:
        """Restore what :meth:`state_dict` saved: the step count and the momentum buffer.

        The flat parameter torch's SGD steps is re-created from the buffer's shape (on
        ``device``, default the buffer's own); its values do not matter, :meth:`step` copies
        the round's weights into it first.  A state without optimizer state (no step taken yet,
        or no momentum) leaves the optimizer to be created at the next step, as a fresh one is.
        """
        steps = state["steps"]
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
            raise ValueError(f"steps must be a non-negative integer, got {steps!r}")
        self._param, self._opt, self._undo = None, None, None
        saved = state.get("optimizer")
        buffers = [s.get("momentum_buffer") for s in saved["state"].values()] if saved is not None else []
        buffers = [b for b in buffers if b is not None]
        if len(buffers) > 1:
            raise ValueError("the saved optimizer holds more than one momentum buffer")
        if buffers:
            buffer = buffers[0]
            target = buffer.device if device is None else torch.device(device)
            self._new_optimizer(torch.zeros_like(buffer, device=target))
            self._opt.state[self._param]["momentum_buffer"] = buffer.detach().to(target).clone()
        self.steps = steps

    def _new_optimizer(self, values: torch.Tensor) -> None:
        """A fresh flat parameter holding ``values`` and torch's SGD over it, with our settings."""
        self._param = torch.nn.Parameter(values)
        self._opt = torch.optim.SGD(
            [self._param],
            lr=self.lr,
            momentum=self.momentum,
            weight_decay=self.weight_decay,
            nesterov=self.nesterov,
        )

    def __repr__(self) -> str:
        return (
            f"ServerOptimizer(lr={self.lr}, momentum={self.momentum}, weight_decay={self.weight_decay}, "
            f"nesterov={self.nesterov}, milestones={self.milestones}, gamma={self.gamma})"
        )
