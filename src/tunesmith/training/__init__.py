"""Fine-tuning (`tunesmith train`): the data set (`data`), the code cache (`codes`), batches
(`batches`), MusicGen's objective (`objective`), LoRA (`lora`), the loop with its saved state
(`trainer`, `run_files`), settings (`settings`), `--full` checkpoints (`export`) and the loss
plot (`plot`). Like `jobs`, it drives a loaded `MusicGen` from above the public API, and may
import `checkpoints`, `generation`, `audio`, `engine`, `models`, `options` and `errors`;
nothing below it imports it.
"""
