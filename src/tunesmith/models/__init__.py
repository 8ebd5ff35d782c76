"""The networks, in plain torch: T5 (`t5`), the codebook decoder with its KV cache (`lm`),
EnCodec (`encodec`), melody's chroma-prefix decoder (`melody`), and the whole
(`network.MusicGenModel`). They take their config objects and compute; they never open a
file or choose how they are run. May import only `models`, `config` and `errors`.
"""
