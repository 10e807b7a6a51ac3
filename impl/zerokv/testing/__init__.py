"""``zerokv.testing``: the model-vs-implementation machinery, shipped as a library.

The differential tests and ``zerokv.ShadowManager`` hold the implementation against the
executable spec (``zerokv_spec``) with the same pieces:

* ``zerokv.testing.encoding`` - one token encoding: spec entries and batches as tensors
  and back, bit-exactly (a swapped channel, row or layer cannot decode);
* ``zerokv.testing.views`` - everything observable about a pool (``PoolState`` from the
  index protocol, plus the decoded K/V), from either side, compared with ``==``;
* ``zerokv.testing.mirror`` - run an operation on both sides and mirror their errors;
* ``zerokv.testing.backends`` - the index backends a test runs a cache on, by name;
* ``zerokv.testing.stateful`` - the hypothesis base machine and strategies (imported on
  its own: it needs ``hypothesis``, which the rest does not).

A downstream project that wraps zerokv can reuse these to test its own layer against the
spec (``DiffMachine`` is a ``hypothesis.stateful.RuleBasedStateMachine``).
"""

from zerokv.testing.encoding import (
    OFFSET_STEP,
    Row,
    Shape,
    Tokens,
    TokenSource,
    decode_batch,
    decode_entries,
    encode_batch,
    encode_correction,
    encode_entries,
    encode_new_tokens,
    fingerprint_tensors,
    keys_tensor,
    offsets,
    priority_tensors,
)
from zerokv.testing.mirror import TENSOR_ONLY, Outcome, attempt, disagreement, run_both, same_error
from zerokv.testing.views import (
    PoolView,
    assert_same_manager,
    assert_views,
    impl_pool_view,
    spec_pool_state,
    spec_pool_view,
    state_differences,
)

__all__ = [
    "OFFSET_STEP",
    "TENSOR_ONLY",
    "Outcome",
    "PoolView",
    "Row",
    "Shape",
    "TokenSource",
    "Tokens",
    "assert_same_manager",
    "assert_views",
    "attempt",
    "decode_batch",
    "decode_entries",
    "disagreement",
    "encode_batch",
    "encode_correction",
    "encode_entries",
    "encode_new_tokens",
    "fingerprint_tensors",
    "impl_pool_view",
    "keys_tensor",
    "offsets",
    "priority_tensors",
    "run_both",
    "same_error",
    "spec_pool_state",
    "spec_pool_view",
    "state_differences",
]
