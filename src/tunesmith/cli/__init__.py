"""The command line: `tunesmith generate | batch | serve | models | conform`, one module per
command.

Interfaces may import the public API (`tunesmith.musicgen`), the jobs, the server and the
checkpoints' catalog; nothing imports them. `arguments` holds what the commands share.
"""
