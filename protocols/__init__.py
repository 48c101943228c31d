"""Secure analyses built on the primitives of ``mpc``, and their plaintext twin.

Each module implements one analysis of docs/ALGORITHMS.md on secret-shared
arrays (``qc``, ``pca``, ``association``, ``logistic``, ``logrank``);
``reference`` computes the same definitions in plain numpy/scipy and is the
baseline every secure result is tested against.
"""
