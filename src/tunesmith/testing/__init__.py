"""Random checkpoints in the official layouts (hub and audiocraft), for tests and benchmarks:
`checkpoints` builds them with transformers' own classes (a test-only dependency),
`tokenizer` writes a real sentencepiece T5 tokenizer for them."""
