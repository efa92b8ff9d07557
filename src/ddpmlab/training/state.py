"""What a checkpoint holds of a training run, and how it is restored (a mixin of ``Trainer``).

Weights, EMA, AdamW moments and step counts, both RNG states of every rank, the objective's own state
(e.g. the importance sampler's history), the loss history and the step: enough to resume bit for bit.
"""
from __future__ import annotations

import functools
import hashlib
import json

import torch

from ddpmlab.core.utils import DDPMLabError
from ddpmlab.runs.checkpoint import META_FILE, Checkpoint, RunWriter, check_resume_config, check_tensors
from ddpmlab.training.distributed import barrier, gather

OPTIMIZER_STATE = ("exp_avg", "exp_avg_sq", "max_exp_avg_sq", "step")  # AdamW's per-parameter tensors


class CheckpointState:
    """Checkpoint I/O of a ``Trainer`` (uses its model, ema, optimizer, objective, generator, ctx, cfg)."""

    def save_checkpoint(self, writer: RunWriter) -> None:
        """Collective under torchrun: every rank sends its state, rank 0 writes, all wait for it."""
        tensors, meta = self.state_dict()
        writer.save(tensors, meta)
        barrier(self.ctx)

    def _rank_state(self) -> dict:
        """Tensors that differ between ranks: RNG states and the importance sampler's history."""
        state = {"generator": self.generator.get_state(), "torch_rng": torch.get_rng_state()}
        objective_state = getattr(self.objective, "state_dict", None)  # optional part of an objective
        if objective_state is not None:
            state.update(objective_state())
        return state

    @functools.cached_property
    def _data_description(self) -> dict:
        """What the checkpoint records about the data (hashing a fixed training set once per run)."""
        d = json.loads(json.dumps(self.data.describe()))
        if not self.data.stream:  # the training set itself, so a changed data file is noticed
            d["sha256"] = hashlib.sha256(self.data.train.detach().cpu().contiguous().numpy().tobytes()).hexdigest()
        return d

    def state_dict(self) -> tuple[dict, dict]:
        """(tensors, meta) of a checkpoint; collective under torchrun (every rank's RNG state is gathered)."""
        # clones: the parameters may be views of the optimiser's one buffer (the EMA's of its own), which
        # safetensors refuses
        tensors = {f"model.{k}": v.clone() for k, v in self.model.state_dict().items()}
        if self.ema is not None:
            tensors.update({f"ema.{k}": v.clone() for k, v in self.ema.state_dict().items()})
        opt = self.optimizer.state_dict()
        for i, state in opt["state"].items():
            tensors.update({f"optimizer.{i}.{name}": v for name, v in state.items()})
        for name, value in self._rank_state().items():
            for r, v in enumerate(gather(value, self.ctx)):
                tensors[f"rank{r}.{name}"] = v
        meta = {"step": self.step, "world_size": self.ctx.world_size, "seed": self.cfg.train.seed,
                "config": self.cfg.to_dict(), "data": self._data_description,
                "param_groups": json.loads(json.dumps(opt["param_groups"])), "loss_history": list(self.loss_history),
                "train_seconds": self.train_seconds, "torch_version": torch.__version__,
                "num_threads": torch.get_num_threads()}  # bit-identical resume needs the same count
        return tensors, meta

    def _expected_tensors(self, names) -> dict:
        """name -> (shape, dtype) a checkpoint of this run must hold; optimizer entries of the names given."""
        expected = {f"model.{k}": (v.shape, v.dtype) for k, v in self.model.state_dict().items()}
        if self.ema is not None:
            expected.update({f"ema.{k}": (v.shape, v.dtype) for k, v in self.ema.state_dict().items()})
        params = list(self.model.parameters())
        for name in names:
            parts = name.split(".")
            if len(parts) == 3 and parts[0] == "optimizer" and parts[1].isdigit() and int(parts[1]) < len(params) \
                    and parts[2] in OPTIMIZER_STATE:
                p = params[int(parts[1])]
                expected[name] = ((), torch.get_default_dtype()) if parts[2] == "step" else (p.shape, p.dtype)
        for name, value in self._rank_state().items():
            expected.update({f"rank{r}.{name}": (value.shape, value.dtype) for r in range(self.ctx.world_size)})
        return expected

    def load_state(self, ckpt: Checkpoint) -> None:
        """Continue from ``ckpt`` (read by ``checkpoint.read_checkpoint``): refuse one that does not match
        this run, then restore weights, EMA, optimiser, RNG states, sampler history, losses and step."""
        where = ckpt.path / META_FILE
        check_resume_config(ckpt.cfg, self.cfg, where)
        if ckpt.meta["world_size"] != self.ctx.world_size:
            raise DDPMLabError(f"{where}: written by {ckpt.meta['world_size']} process(es); resume with the same "
                               f"number (this run has {self.ctx.world_size})")
        if ckpt.meta["data"] != self._data_description:
            raise DDPMLabError(f"{where}: the training data differ from the ones the checkpoint was trained on")
        check_tensors(ckpt, self._expected_tensors(ckpt.tensors))
        T, r = ckpt.tensors, self.ctx.rank

        def prefixed(prefix):
            return {k[len(prefix):]: v for k, v in T.items() if k.startswith(prefix)}

        self.model.load_state_dict(prefixed("model."))
        if self.ema is not None:
            self.ema.load_state_dict(prefixed("ema."))
        groups = ckpt.meta["param_groups"]  # one group: every parameter, indices 0..n-1
        n_params = len(list(self.model.parameters()))
        if len(groups) != 1 or not isinstance(groups[0], dict) or groups[0].get("params") != list(range(n_params)):
            raise DDPMLabError(f"{where}: optimiser parameter groups do not match this run's model")
        current = self.optimizer.param_groups[0]  # JSON turned tuples (betas) into lists
        group = {k: tuple(v) if isinstance(current.get(k), tuple) and isinstance(v, list) else v
                 for k, v in groups[0].items()}
        state: dict = {}
        for name, v in prefixed("optimizer.").items():
            i, key = name.split(".")
            state.setdefault(int(i), {})[key] = v
        try:
            self.optimizer.load_state_dict({"state": state, "param_groups": [group]})
            self.generator.set_state(T[f"rank{r}.generator"])
            torch.set_rng_state(T[f"rank{r}.torch_rng"])
        except (RuntimeError, ValueError, KeyError, TypeError) as exc:
            raise DDPMLabError(f"{where}: cannot restore the optimiser or RNG state ({str(exc).splitlines()[0]})") \
                from None
        load_objective = getattr(self.objective, "load_state_dict", None)  # optional part of an objective
        if load_objective is not None:
            mine = prefixed(f"rank{r}.")
            load_objective({k: v for k, v in mine.items() if k not in ("generator", "torch_rng")})
        self.step = ckpt.step
        self.loss_history = [float(v) for v in ckpt.meta["loss_history"]]
        self.train_seconds = float(ckpt.meta["train_seconds"])


