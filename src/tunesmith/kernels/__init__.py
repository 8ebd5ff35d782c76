"""Compute kernels of our own, the leaves of the package: they import nothing of tunesmith.
`cpu/`: C++ (AVX2, AVX-VNNI, AVX-512 VNNI builds) for the decoder's few-row products,
attention and whole step."""
