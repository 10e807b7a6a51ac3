"""Encodings: how drivers describe pool states and operations with a few small ints.

Policy codes, pool opcodes (``GET`` .. ``KEY_AT``), manager opcodes (``STORE_ROOT`` ..
``CLEAR_ALL``), the key and value constants, the raw ``SlotSpec`` / ``Op`` / ``MOp``
shapes, ``pick`` (the decoder of every symbolic int) and the decoders built on it.
"""

from __future__ import annotations

from zerokv_spec.pool import Policy

#: Policy codes of the drivers: ``POLICIES[code]``.
POLICIES: tuple[Policy, ...] = (Policy.FIFO, Policy.LRU, Policy.PRIORITY)
FIFO_CODE, LRU_CODE, PRIORITY_CODE = 0, 1, 2

#: Pool opcodes (``apply_op``).
GET, PEEK, PUT, EVICT, CLEAR, SET_PRIORITY, SLOT_OF, KEY_AT = range(8)
OP_NAMES = ("get", "peek", "put", "evict", "clear", "set_priority", "slot_of", "key_at")

#: Manager opcodes (``apply_manager_op``); an operation is ``(opcode, env_id, key)``.
STORE_ROOT, STORE_RECURRENT, LOOKUP, LOOKUP_ROOT, LOOKUP_RECURRENT = range(5)
CLEAR_ENV, CLEAR_RECURRENT, CLEAR_ALL = range(5, 8)
LOOKUPS = (LOOKUP, LOOKUP_ROOT, LOOKUP_RECURRENT)
MOp = tuple[int, int, int]

#: Drivers draw keys from ``0 .. MAX_KEY``; ``ABSENT_KEY`` and above are never restored.
MAX_KEY = 3
ABSENT_KEY = 9
#: A restored key ``k`` holds the value ``RESTORED_VALUE + k``; step ``i`` of a driver
#: writes ``WRITTEN_VALUE + i`` (so a hit shows which write it returns).
RESTORED_VALUE = 100
WRITTEN_VALUE = 1000

#: One slot of a restored pool: ``(key, fingerprint, rank, priority)``, decoded by
#: ``decode_slot`` to ``key`` in ``-1..MAX_KEY`` (-1: empty), ``fingerprint`` in ``-1..1``
#: (-1: none), ``rank`` in ``0..3`` (orders LRU last uses / PRIORITY insertions) and
#: ``priority`` in ``0..2`` (PRIORITY).
SlotSpec = tuple[int, int, int, int]
#: One pool operation ``(opcode, key, arg)``, decoded by ``decode_op``. ``arg`` is the
#: fingerprint of ``GET`` / ``PEEK`` / ``PUT`` (-1: none), also the priority of a ``PUT`` on
#: a priority pool (-1: none), the new priority of ``SET_PRIORITY``, the slot of ``KEY_AT``.
Op = tuple[int, int, int]


def pick(x: int, n: int) -> int:
    """``x`` as a concrete int when ``0 <= x < n``; any other ``x`` gives ``n - 1``.

    The drivers decode every symbolic argument with ``pick``: it compares ``x`` with each
    candidate, so CrossHair forks one path per value and explores them systematically, and
    everything after it runs on concrete ints (no 64-bit hash arithmetic reaches the solver,
    no list is sized by a symbolic int). Outside CrossHair it is a clamp.
    """
    for value in range(n - 1):
        if x == value:
            return value
    return n - 1


def decode_slot(spec: SlotSpec) -> tuple[int, int | None, int, int]:
    """``(key or -1, fingerprint or None, rank, priority)`` of a raw ``SlotSpec``."""
    key, fp, rank, prio = spec
    f = pick(fp + 1, 3) - 1
    return pick(key + 1, MAX_KEY + 2) - 1, None if f < 0 else f, pick(rank, 4), pick(prio, 3)


def decode_op(op: Op) -> Op:
    """A raw ``(opcode, key, arg)`` reduced to ``0..7``, ``0..MAX_KEY``, ``-1..3``."""
    code, key, arg = op
    return pick(code, 8), pick(key, MAX_KEY + 1), pick(arg + 1, 5) - 1


def fingerprint_arg(arg: int) -> int | None:
    """The fingerprint an ``arg`` encodes (``None`` when negative)."""
    return None if arg < 0 else arg


def priority_arg(policy: Policy, arg: int) -> float | None:
    """The priority a ``PUT`` passes: ``float(arg)`` on priority pools, else none."""
    return float(arg) if policy is Policy.PRIORITY and arg >= 0 else None
