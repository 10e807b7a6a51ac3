"""Differential tests: hypothesis state machines driving ``zerokv_spec`` and ``zerokv``.

Every machine runs the reference model and the implementation side by side and compares
every observable result after every step. ``common`` holds the shared encoding of spec
tokens into tensors, the views used to compare whole states, and the error comparison.
"""
