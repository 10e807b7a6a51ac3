"""Lockstep verification inside a user's own run: ``attach_policy(policy, verify=True)``.

Every inference call of the attached world model is also made, with the same arguments, on
a **twin**: a copy of the world model made before attaching, with LightZero's own caches,
whose parameters and buffers *are* the original's (shared tensors, so every weight update
reaches both). The twin follows the original's mode (train / eval), its position table
(``precompute_pos_emb_diff_kv``) and its cache clears (``clear_caches``, the proxies'
``clear()``). Every output - latent state, reward, policy logits, value - is compared bit
for bit, row by row.

A difference where LightZero's caches are known to be wrong is **classified** and counted
(``Verifier.counts``) instead of failing; anything else raises ``LockstepDivergence``
naming the call, the method, the row and the tensor. The kinds:

* ``root-miss`` - the twin's root lookup missed for a continuing row (LightZero's root
  lookup by latent: a re-encoded latent with other low bits, 0.2.0's 2-slot ring), so
  LightZero restarted that row's context from its last latent; zerokv kept the history;
* ``ready-subset`` - a root step of fewer rows than environments on 0.2.0, which indexes
  its root pools by batch position and stores padded entries;
* ``recurrent-miss`` - the twin missed a search parent (its pools evicted or dropped it)
  and recomputed it from the latent alone;
* ``latent-alias`` - the row's parent latent is bitwise equal to another node's of the same
  search (POMDP aliasing): LightZero's latent key served one node the other's context;
* ``double-miss`` - LightZero 0.2.0 raised ``TypeError`` for a parent in no pool.

After a classified difference the twin's later inputs are zerokv's outputs, so knock-on
differences classify the same way (the twin then misses what it never stored).
"""

from __future__ import annotations

import copy
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

import torch

from zerokv.errors import ContractViolation

__all__ = ["KINDS", "LockstepDivergence", "Verifier"]

#: The classified kinds (module docstring).
KINDS = ("root-miss", "ready-subset", "recurrent-miss", "latent-alias", "double-miss")
#: The compared outputs of an inference call (after ``output_sequence``).
OUTPUTS = ("latent_state", "reward", "policy_logits", "value")
#: LightZero 0.2.0's message for a search parent in no pool.
DOUBLE_MISS = "list indices must be integers or slices, not NoneType"

_ABSENT = object()


class LockstepDivergence(ContractViolation):
    """zerokv's output differs from LightZero's where LightZero's caches are right."""

    def __init__(self, call: int, method: str, row: int, tensor: str, detail: str) -> None:
        self.call, self.method, self.row, self.tensor = call, method, row, tensor
        super().__init__(
            f"lockstep: call {call} ({method}), environment row {row}, {tensor}: zerokv "
            f"differs from LightZero's own caching ({detail})"
        )


def weight_sharing_twin(wm: Any) -> Any:
    """A deep copy of ``wm`` whose parameters and buffers are ``wm``'s own tensors."""
    twin = copy.deepcopy(wm)
    for mine, theirs in zip(wm.modules(), twin.modules()):
        for name, param in mine._parameters.items():
            theirs._parameters[name] = param
        for name, buffer in mine._buffers.items():
            theirs._buffers[name] = buffer
    return twin


def _rows_that_differ(x: Any, y: Any) -> list[int] | None:
    """Rows whose bits differ (None: not two comparable tensors)."""
    if not isinstance(x, torch.Tensor) or not isinstance(y, torch.Tensor):
        return None
    if x.shape != y.shape or x.dtype != y.dtype:
        return list(range(int(x.shape[0]) if x.dim() else 1))
    rows = int(x.shape[0]) if x.dim() else 1
    a, b = x.reshape(rows, -1), y.reshape(rows, -1)
    same = (a == b) | (torch.isnan(a) & torch.isnan(b))
    return (~same.all(dim=1)).nonzero().flatten().tolist()


class Verifier:
    """The twin and the comparison of one attached world model (module docstring)."""

    def __init__(self, wm: Any, env_num: int) -> None:
        self.world_model = wm
        self.twin = weight_sharing_twin(wm)
        self.env_num = env_num
        self.calls = 0
        self.compared = 0
        self.counts: Counter[str] = Counter()
        self._saved: dict[str, Any] = {}
        #: How many nodes of the current search produced each latent (bytes).
        self._owners: Counter[bytes] = Counter()

    # ------------------------------------------------------------------ install
    def install(self) -> None:
        """Wrap what the attachment installed (and the position table's recompute)."""
        wm = self.world_model
        wrappers: dict[str, Callable[..., Any]] = {
            "forward_initial_inference": self._initial(wm.forward_initial_inference),
            "forward_recurrent_inference": self._recurrent(wm.forward_recurrent_inference),
            "clear_caches": self._both(wm.clear_caches, self.twin.clear_caches),
            "precompute_pos_emb_diff_kv": self._both(
                wm.precompute_pos_emb_diff_kv, self.twin.precompute_pos_emb_diff_kv
            ),
        }
        for name, wrapper in wrappers.items():
            self._saved[name] = wm.__dict__.get(name, _ABSENT)
            wm.__dict__[name] = wrapper
        self._mirror_proxies()

    def _mirror_proxies(self) -> None:
        """The proxies' ``clear()`` (the policy clears pools directly) clears the twin's."""
        wm, twin = self.world_model, self.twin
        for e, proxy in enumerate(getattr(wm, "past_kv_cache_init_infer_envs", []) or []):
            theirs = twin.past_kv_cache_init_infer_envs[e]
            proxy._clear = self._both(proxy._clear, theirs.clear)
        recurrent = wm.__dict__.get("past_kv_cache_recurrent_infer")
        if recurrent is not None and hasattr(twin, "past_kv_cache_recurrent_infer"):
            recurrent._clear = self._both(
                recurrent._clear, twin.past_kv_cache_recurrent_infer.clear
            )

    def remove(self) -> None:
        wm = self.world_model
        for name, saved in self._saved.items():
            if saved is _ABSENT:
                wm.__dict__.pop(name, None)
            else:
                wm.__dict__[name] = saved
        self._saved.clear()

    @staticmethod
    def _both(mine: Callable[..., Any], theirs: Callable[..., Any]) -> Callable[..., Any]:
        def both(*args: Any, **kwargs: Any) -> Any:
            theirs(*args, **kwargs)
            return mine(*args, **kwargs)

        return both

    # ------------------------------------------------------------------ calls
    def _same_mode(self) -> None:
        for mine, theirs in zip(self.world_model.modules(), self.twin.modules()):
            theirs.training = mine.training

    def _twin_call(self, method: str, args: Sequence[Any], kwargs: dict[str, Any]) -> Any:
        self._same_mode()
        return getattr(self.twin, method)(*copy.deepcopy(tuple(args)), **copy.deepcopy(kwargs))

    def _initial(self, ours: Callable[..., Any]) -> Callable[..., Any]:
        def initial(*args: Any, **kwargs: Any) -> Any:
            twin = self.twin
            before = (twin.root_hit_cnt, twin.root_total_query_cnt)
            want = self._twin_call("forward_initial_inference", args, kwargs)
            out = ours(*args, **kwargs)
            self.calls += 1
            hits = twin.root_hit_cnt - before[0]
            queried = twin.root_total_query_cnt - before[1]
            rows = int(out[1].shape[0])
            kind = None
            if rows < self.env_num:
                kind = "ready-subset"
            elif hits < queried:
                kind = "root-miss"
            self._compare("forward_initial_inference", out, want, lambda row: kind)
            self._owners = Counter(_row_bytes(out[1]))
            return out

        return initial

    def _recurrent(self, ours: Callable[..., Any]) -> Callable[..., Any]:
        def recurrent(*args: Any, **kwargs: Any) -> Any:
            twin = self.twin
            before = (twin.hit_count, twin.total_query_count)
            history = args[0] if args else kwargs["state_action_history"]
            parents = _row_bytes(history[-1][0])
            try:
                want = self._twin_call("forward_recurrent_inference", args, kwargs)
            except TypeError as err:
                if DOUBLE_MISS not in str(err):
                    raise
                want = None
            out = ours(*args, **kwargs)
            self.calls += 1
            if want is None:
                self.counts["double-miss"] += 1
            else:
                misses = (twin.total_query_count - before[1]) - (twin.hit_count - before[0])

                def kind(row: int) -> str | None:
                    if self._owners[parents[row]] > 1:
                        return "latent-alias"
                    return "recurrent-miss" if misses > 0 else None

                self._compare("forward_recurrent_inference", out, want, kind)
            self._owners.update(_row_bytes(out[1]))
            return out

        return recurrent

    def _compare(
        self,
        method: str,
        out: Sequence[Any],
        want: Sequence[Any],
        kind: Callable[[int], str | None],
    ) -> None:
        seen: set[int] = set()
        for name, x, y in zip(OUTPUTS, out[1:], want[1:]):
            rows = _rows_that_differ(x, y)
            if rows is None:
                continue
            self.compared += 1
            for row in rows:
                if row in seen:
                    continue
                label = kind(row)
                if label is None:
                    raise LockstepDivergence(
                        self.calls, method, row, name, "no known LightZero cache defect applies"
                    )
                seen.add(row)
                self.counts[label] += 1

    def summary(self) -> dict[str, Any]:
        return {"calls": self.calls, "compared": self.compared, **dict(self.counts)}


def _row_bytes(latents: Any) -> list[bytes]:
    if isinstance(latents, torch.Tensor):
        latents = latents.detach().cpu().numpy()
    rows = latents.reshape(latents.shape[0], -1)
    return [row.tobytes() for row in rows]
