"""Host-side wrappers of each backend, one module per backend.

Each module registers its backend and implementations with
:mod:`fastconv.registry` at import time and must import with NumPy alone:
Numba, numba-cuda and CuPy are imported inside the functions that need them.
Wrappers follow one pattern: arguments arrive checked (a ``*Params``
record), the wrapper allocates the output, fetches the cached kernel and
launches it.
"""
