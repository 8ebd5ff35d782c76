"""Jobs: many clips from a prompts file (`prompts_file`), batched, resumable, with a manifest
(`batch`). An interface layer like `cli` and `server`: it drives a loaded `MusicGen` and may
import `audio`, `finishing`, `options` and `errors`; nothing below it imports it.
"""
