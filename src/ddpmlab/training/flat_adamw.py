"""AdamW (Loshchilov & Hutter 2019) on one flat buffer that the model's parameters and gradients view.

``torch.optim.AdamW(fused=True)`` does a step's arithmetic in one kernel, but keeps a step counter, a
cast and a state lookup per parameter tensor (22 for the default MLP), and autograd hands each
parameter a freshly allocated gradient: for a small model that bookkeeping costs more than the update
(about 10% of a default training step on our 2-core machine). ``FlatAdamW`` gives the optimiser one
tensor. While attached, every parameter is a view of one buffer and its gradient a view of another, so
backward accumulates straight into the flat gradient and the fused kernel updates the whole model at
once. The update is elementwise: the numbers are ``torch.optim.AdamW(params, fused=True)``'s bit for
bit (``tests/test_flat_adamw.py``), and ``state_dict`` / ``load_state_dict`` speak that optimiser's
per-parameter format, so checkpoints are the same either way.

One difference: gradients are zeroed, never set to None, so a parameter that gets no gradient in a step
is stepped with a zero gradient (weight decay and moment decay apply), as torch's AdamW does after
``zero_grad(set_to_none=False)``. ``detach`` gives every parameter and gradient its own storage again
(``Trainer.run`` does at its end): safetensors refuses tensors that share memory.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.optim import optimizer as _torch_optimizer

MOMENTS = ("exp_avg", "exp_avg_sq", "max_exp_avg_sq")


def flattenable(params: list[torch.Tensor]) -> bool:
    """Whether ``params`` can share one buffer: all trainable, dense, of one dtype on one device."""
    return bool(params) and all(p.requires_grad and p.layout == torch.strided and p.dtype == params[0].dtype
                                and p.device == params[0].device for p in params)


class FlatAdamW(torch.optim.AdamW):
    """``FlatAdamW(model.parameters(), lr=..., weight_decay=...)``: fused AdamW on their flat buffer."""

    def __init__(self, params, **options):
        self.model_params = list(params)
        if not flattenable(self.model_params):
            raise ValueError("FlatAdamW needs trainable dense parameters of one dtype on one device")
        self.numels = [p.numel() for p in self.model_params]
        flat = nn.Parameter(torch.cat([p.detach().reshape(-1) for p in self.model_params]))
        flat.grad = torch.zeros_like(flat)
        super().__init__([flat], fused=True, **options)
        self.flat = flat
        self.grad_views: list[torch.Tensor] | None = None  # set while attached
        self.attach()

    def _views(self, t: torch.Tensor) -> list[torch.Tensor]:
        return [v.view_as(p) for v, p in zip(t.split(self.numels), self.model_params)]

    @property
    def attached(self) -> bool:
        return self.grad_views is not None

    @torch.no_grad()
    def attach(self) -> None:
        """Make the parameters views of the buffer (holding their current values), their gradients views
        of the flat gradient (zero)."""
        if self.attached:
            return
        self.flat.copy_(torch.cat([p.detach().reshape(-1) for p in self.model_params]))
        self.flat.grad.zero_()
        self.grad_views = self._views(self.flat.grad)
        for p, value, grad in zip(self.model_params, self._views(self.flat.data), self.grad_views):
            p.data = value
            p.grad = grad

    @torch.no_grad()
    def detach(self) -> None:
        """Give every parameter and gradient its own storage again (the same values)."""
        if self.attached:
            for p in self.model_params:
                p.data = p.data.clone()
                p.grad = p.grad.clone() if p.grad is not None else None
            self.grad_views = None

    @torch.no_grad()
    def zero_grad(self, set_to_none: bool = True) -> None:
        """Zero the flat gradient (``set_to_none`` is ignored: the gradients stay views of it)."""
        if not self.attached:
            self.attach()
            return
        self._relink()  # first: a gradient replaced since the step is put back, then zeroed with the rest
        self.flat.grad.zero_()

    def _relink(self) -> None:
        """Put back a gradient somebody replaced (or set to None) as its view, keeping its values."""
        for p, view in zip(self.model_params, self.grad_views):
            g = p.grad
            if g is not view:
                if g is None:
                    view.zero_()
                elif g.data_ptr() != view.data_ptr():
                    view.copy_(g)
                p.grad = view

    def step(self, closure=None):
        """One AdamW step of the whole model. The first step is torch's own (it creates the moments);
        later ones call the fused kernel that torch's step calls, with the same arguments, without its
        per-call bookkeeping (bit for bit torch's, ``tests/test_fast_step.py``).

        Torch wraps every optimiser's ``step`` in a profiler range and a loop over the step hooks; in a
        default training step that wrapper costs about 0.05 ms of 1.3. This ``step`` takes the wrapper
        only when something would see it: a step hook (this optimiser's or a global one) or a running
        profiler, which then sees ``Optimizer.step#FlatAdamW.step`` as before."""
        if _step_observed(self):
            return _observed_step(self, closure)
        return self._step(closure)

    step.hooked = True  # torch.optim.Optimizer wraps a class's step unless it says it is hooked

    @torch.no_grad()
    def _step(self, closure=None):
        if closure is not None:
            raise ValueError("FlatAdamW takes no closure")
        if not self.attached:
            raise RuntimeError("FlatAdamW.step after detach: call zero_grad (or attach) before backward")
        self._relink()
        state = self.state.get(self.flat)
        if not state:
            return super().step()
        group = self.param_groups[0]
        beta1, beta2 = group["betas"]
        state["step"].add_(1)
        torch._fused_adamw_([self.flat], [self.flat.grad], [state["exp_avg"]], [state["exp_avg_sq"]],
                            [state["max_exp_avg_sq"]] if group["amsgrad"] else [], [state["step"]],
                            amsgrad=group["amsgrad"], lr=group["lr"], beta1=beta1, beta2=beta2,
                            weight_decay=group["weight_decay"], eps=group["eps"], maximize=group["maximize"],
                            grad_scale=None, found_inf=None)
        return None

    # -- torch.optim.AdamW's per-parameter format -----------------------------------------------------
    def state_dict(self) -> dict:
        flat = super().state_dict()
        (group,) = flat["param_groups"]
        group = dict(group, params=list(range(len(self.model_params))))
        state = {}
        for s in flat["state"].values():
            split = {k: [v.clone() for v in self._views(s[k])] for k in MOMENTS if k in s}
            for i in range(len(self.model_params)):
                state[i] = {"step": s["step"].clone(), **{k: v[i] for k, v in split.items()}}
        return {"state": state, "param_groups": [group]}

    def load_state_dict(self, state_dict: dict) -> None:
        groups = state_dict["param_groups"]
        n = len(self.model_params)
        if len(groups) != 1 or list(groups[0]["params"]) != list(range(n)):
            raise ValueError(f"the state is not of one parameter group over these {n} parameters")
        state = {int(k): v for k, v in state_dict["state"].items()}
        merged = {}
        if state:
            if sorted(state) != list(range(n)):
                raise ValueError("the state does not hold every parameter (FlatAdamW steps all of them together)")
            steps = {float(s["step"]) for s in state.values()}
            if len(steps) != 1:
                raise ValueError(f"the parameters were stepped unequally ({sorted(steps)}); FlatAdamW steps all together")
            merged["step"] = state[0]["step"]
            for k in MOMENTS:
                if k in state[0]:
                    merged[k] = torch.cat([state[i][k].reshape(-1) for i in range(n)])
        super().load_state_dict({"state": {0: merged} if merged else {},
                                 "param_groups": [dict(groups[0], params=[0])]})


_observed_step = torch.optim.Optimizer.profile_hook_step(FlatAdamW._step)  # torch's wrapper, hooks and all


def _step_observed(opt: torch.optim.Optimizer) -> bool:
    """Whether a step hook or a running profiler would see the step (what torch's wrapper serves)."""
    return bool(opt._optimizer_step_pre_hooks or opt._optimizer_step_post_hooks
                or _torch_optimizer._global_optimizer_pre_hooks or _torch_optimizer._global_optimizer_post_hooks
                or torch.autograd.profiler._is_profiler_enabled)
