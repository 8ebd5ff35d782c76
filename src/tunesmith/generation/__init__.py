"""Generation: from encoded text (and an audio prompt) to codes, frame by frame.

`loop` (the decode loop and long-form windows), `sampling` (CFG, temperature, top-k/top-p),
`delay` (the codebook delay pattern), `codec_chunks` (decoding codes in overlapping chunks,
streaming), `progress`, `stream` (code blocks under a progress bar), `condition` (encoded
text), `prompts` (text and audio prompts as the public API takes them), `transition` (one
text's guided logits blended into another's, over a span of steps), `scheduler` (continuous
batching: jobs join and leave a running batch) and `rows` (one job's own decode state in it).
It runs the decoder through an `engine.step.Step` and may import `engine`, `models`, `audio`
(reading an audio prompt), `options`, `config` and `errors`; never the public API or
interfaces.
"""
