"""CPU emulation of CUDA C kernels for tests (see README in this package)."""
