"""`tunesmith generate --from-manifest M --row N -o OUT`: a batch job's clip again, sample for
sample (its prompt, the prompts batched with it, its seed, settings and model)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import InvalidOptionError
from .arguments import (
    check_finishing,
    check_machine,
    check_model_argument,
    check_plot,
    finish_options,
    load,
    output_with_format,
    say,
    wav_subtype,
)


def run_from_manifest(args: argparse.Namespace) -> int:
    from ..audio.files import check_writable
    from ..finishing.options import FinishOptions
    from ..jobs.batch import clip_tags, generate_batch, read_manifest, save_clip
    from ..jobs.prompts_file import options_from_record

    if args.prompts:
        args.usage_error("--from-manifest takes its prompt from the manifest: give no PROMPT")
    if args.row is None:
        args.usage_error("--from-manifest needs --row N")
    manifest = Path(args.from_manifest)
    if not manifest.is_file():
        raise InvalidOptionError(f"manifest {str(manifest)!r} does not exist")
    found = [e for e in read_manifest(manifest) if e["row"] == args.row and e["status"] == "done"]
    if not found:
        raise InvalidOptionError(f"manifest {str(manifest)!r} has no finished row {args.row}")
    entry = found[-1]
    if args.output == "-" or args.stream or args.continue_from:
        raise InvalidOptionError("--from-manifest writes a file: no -o -, --stream or --continue")
    if finish_options(args).changes_audio:
        raise InvalidOptionError(
            "--from-manifest takes tempo, key, loop and fades from the manifest: leave them out"
        )
    output = Path(output_with_format(args.output, args.format))
    check_writable(output)
    normalize = args.normalize or entry.get("normalize") or "loudness"
    finish = FinishOptions.from_record(entry["settings"], normalize)
    check_finishing(finish, [output])
    check_plot(args)
    check_machine(args)
    check_model_argument(entry["model"])
    settings, seed = options_from_record(entry["settings"]), entry["settings"]["seed"]
    batch = entry.get("batch") or {"prompts": [entry["prompt"]], "index": 0}
    manifest_args = {"model": entry["model"], "quantize": entry.get("quantize")}
    model = load(argparse.Namespace(**{**vars(args), **manifest_args}))
    wav = generate_batch(model, batch["prompts"], settings, seed)[batch["index"]]
    fmt = output.suffix.lower().lstrip(".") or "wav"
    subtype = args.wav_subtype or (entry.get("subtype") if fmt == entry.get("format") else None)
    save_clip(
        output, wav, model.sample_rate, normalize=normalize,
        subtype=wav_subtype(output, subtype), plot=args.plot, finish=finish,
        tags=clip_tags(entry["prompt"], entry["model"], entry["settings"], batch=batch),
    )  # fmt: skip
    say(f"wrote {output} (row {args.row} of {manifest}, seed {seed})")
    return 0
