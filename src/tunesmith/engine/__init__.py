"""The engine: how a decoder step runs, chosen once at load time (`prepare.build_step`).

- `step`: the `Step` interface the decode loop calls, and the eager step every other is
  tested against;
- `cpu_step` (one C++ call a step), `compiled_step` (torch.compile), `cuda_graphs`
  (a captured graph replayed per step): the fast steps;
- `int8`, `packed`: the weight formats the fast steps read; `prepare`: repacks a loaded
  decoder for them;
- `hugepages`, `memory`: where weights and KV caches live; `devices`: device and dtype;
- `running_batch`: a running batch's KV pool (fixed places that jobs take and give back) and
  the rows of one of its steps, each at its own position (`Step.rows`).

It may import `models`, `kernels`, `options`, `config` and `errors`; `models` never imports it.
"""
