"""Bounded CrossHair drivers: the contracts of ``zerokv_spec`` stated as PEP 316 docstrings.

Check every driver with the ``crosshair`` nox session (the limits are in ``noxfile.py``), or
by hand::

    crosshair check --analysis_kind=PEP316 spec/zerokv_spec/drivers/pool_drivers.py \\
        spec/zerokv_spec/drivers/entry_drivers.py spec/zerokv_spec/drivers/manager_drivers.py
    crosshair check --analysis_kind=PEP316 zerokv_spec.drivers.pool_drivers.fifo_put_driver

Layout (one concept per module; the three ``*_drivers`` modules hold every driver, the
others what the drivers share):

* ``encodings``       - how drivers encode states and operations as small ints: policy
  codes, pool and manager opcodes, the key and value constants, ``pick`` and the decoders;
* ``snapshots``       - states: ``PoolSnap`` / ``ManagerSnap`` freeze a pool / manager,
  ``restore`` / ``make_manager`` build one from encoded arguments;
* ``clauses``         - named clauses (``Clauses``, ``failed``), the bad-input record
  (``ErrorCase``) and the zero-padding clause shared by several driver modules;
* ``fixtures``        - entries whose tokens name who wrote them (``make_entry``,
  ``tagged_entry``...);
* ``pool_clauses``    - the record of one pool operation (``OpCase``, ``apply_op``) and
  the contract of each operation and of every state (``op_failures``);
* ``model``           - ``Model``, a naive re-implementation of the three policies, and
  runs of operations checked against it (``run_failures``);
* ``manager_clauses`` - the record of one manager operation and the contracts of manager
  steps and runs (``manager_run_failures``);
* ``pool_drivers``    - 17 drivers: every pool operation on arbitrary restored states,
  operation sequences against ``Model``, batch folds, bad inputs;
* ``entry_drivers``   - 5 drivers: assemble / split, append, the window rule, registers;
* ``manager_drivers`` - 5 drivers: operation sequences, isolation, the search budget,
  ``gather_append`` / ``gather_reserve``, bad inputs.

How the drivers are built, and why:

* CrossHair checks the contracts of the *top-level* function it analyses, not those of the
  calls it makes, and it cannot efficiently construct dict + list states from class
  invariants. So every contract is a top-level *driver*: a function of a few small ints and
  short fixed-length lists of int tuples that builds a state, applies operations and
  returns a frozen record of what happened (states before/after, results, errors).
* Arbitrary (not only fresh) pool states come from ``restore``, which builds a valid pool
  directly from a slot description: which key each slot holds, its fingerprint, its
  recency / insertion rank and its priority, plus the FIFO pointer. So one operation on a
  restored state covers what would otherwise take a long history of operations.
* Every symbolic int is decoded with ``pick`` (``0 <= x < n`` gives ``x``, anything else
  ``n - 1``): CrossHair forks one path per value and explores them systematically, the
  spec then runs on concrete ints, and no element-wise ``pre:`` can fail. Keys passed
  straight into the spec's dicts would be "realized" by CrossHair with little diversity.
* Each driver has one ``post:`` line asserting that a ``*_failures`` helper returns ``[]``.
  A helper lists the *named clauses* of a contract that the record violates (for example
  ``"put: the key is stored at the returned slot"``); call it on CrossHair's counterexample
  to see which clause broke. CrossHair analyses every ``post:`` line separately, re-running
  the same paths, so one line per driver keeps the whole run within its time budget.
* Every spec operation runs ``check()`` itself; a broken class invariant raises
  ``ContractViolation`` (an ``AssertionError``), which CrossHair reports as a counterexample
  just like a failed ``post:``.
* The clauses never trust the spec's own bookkeeping helpers for what they check:
  ``state_failures`` recomputes the eviction order from the raw policy state, the put
  clauses recompute the victim, and ``Model`` is a deliberately naive re-implementation of
  the three policies (plain lists and dicts) that the sequence drivers follow step by step.
* CrossHair analyses only the functions a module defines, and a ``pre:`` / ``post:`` line
  is evaluated in its driver's module: a driver module imports every helper its
  conditions name.

Nothing here is imported by ``zerokv_spec/__init__``; the package only reads the spec.
"""
