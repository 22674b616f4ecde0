"""Compiled accelerators (C against the CPython API). Import through walstream.native, which picks them or
the pure-Python reference at import time."""
