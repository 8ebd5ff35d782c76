"""Audio in and out: files and tags (`files`, soundfile/soxr), loudness (`loudness`,
pyloudnorm), spectrogram pictures (`spectrogram`), WAV written as it streams
(`streaming_wav`), the chroma of a melody (`chroma`), and equal-power fades (`fades`).
Imports only `errors` and `options` of tunesmith.
"""
