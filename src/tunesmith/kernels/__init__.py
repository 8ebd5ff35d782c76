"""Compute kernels of our own, the leaves of the package: they import nothing of tunesmith.
`cpu/`: AVX2 C++ for the decoder's few-row products, attention and whole step."""
