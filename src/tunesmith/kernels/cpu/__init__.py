"""CPU kernels: leaves that import nothing of tunesmith's.

- `csrc/`: the C++ (AVX2 + FMA + F16C): the int8 and float32 few-row products, one query's
  attention over a float16 KV cache, and a whole decoder step in one parallel region.
- `build`: compiles `csrc/` once as one torch extension; `available()` says whether it loaded.
- `ops`: the Python bindings and the ops' fake shapes for torch.compile.
- `layout`: the packed weight layout the products read.
"""
