"""CPU kernels: leaves that import nothing of tunesmith's.

- `csrc/`: the C++ (AVX2 + FMA + F16C at the least): the int8 and float32 few-row products,
  one query's attention over a float16 or int8 KV cache, and a whole decoder step in one
  parallel region; the int8 products use VNNI's vpdpbusd in the builds that have it.
- `isa`: the instruction sets there are builds for, and the one this CPU gets
  (`TUNESMITH_CPU_KERNELS` forces one).
- `build`: compiles `csrc/` once per instruction set as a torch extension; `kernels()` gives
  this CPU's ops (None where they cannot load).
- `ops`: the Python bindings of one build and the ops' fake shapes for torch.compile.
- `layout`: the packed weight layout the products read.
"""
