"""Command line: argument parsing only; each command calls one library function."""
from __future__ import annotations

import argparse
import json
import logging
import sqlite3
import sys
from pathlib import Path

from captioner.argtypes import non_negative_int, positive_int
from captioner.config import default_data_dir
from captioner.errors import CaptionerError


def _add_config_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="YAML preset, e.g. configs/default.yaml")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override one config key, e.g. --set train.epochs=20 (repeatable)")


def _add_decoding_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rerank-neighbours", type=non_negative_int, default=None,
                        help="rerank the beam by consensus with this many most similar training photos (0: off; default: the run's)")
    parser.add_argument("--rerank-weight", type=float, default=None, help="weight of that consensus (default: the run's)")
    parser.add_argument("--flip-ensemble", action=argparse.BooleanOptionalAction, default=None,
                        help="decode each photo together with its mirror image, averaging the two (default: the run's)")
    parser.add_argument("--grounding", action=argparse.BooleanOptionalAction, default=None,
                        help="pass over candidates that conflict with what the encoder's classifier recognises (default: the run's)")
    parser.add_argument("--fallback", action=argparse.BooleanOptionalAction, default=None,
                        help="when every candidate conflicts, say less: 'a photo of a cat' (default: the run's)")


def _config(args: argparse.Namespace):
    from captioner.config import load_config

    return load_config(args.config, args.overrides)


def command_prepare(args: argparse.Namespace) -> int:
    from captioner.data.flickr import prepare

    config = _config(args)
    summary = prepare(args.data or config.data.data_dir, args.out or config.data.prepared_dir,
                      min_word_count=config.data.min_word_count)
    summary["missing_images"] = len(summary["missing_images"])
    print(json.dumps(summary, indent=2))
    return 0


def command_download(args: argparse.Namespace) -> int:
    from captioner.data.download import download_flickr8k

    print(f"Flickr8k ready in {download_flickr8k(args.out)}")
    return 0


def command_features(args: argparse.Namespace) -> int:
    from captioner.pipeline import extract_prepared_features

    config = _config(args)
    if args.encoder:
        config.encoder.name = args.encoder
    cache = extract_prepared_features(config)
    print(f"features cached in {cache.folder}")
    return 0


def command_train(args: argparse.Namespace) -> int:
    from captioner.train import train

    config = _config(args)
    if args.run:
        config.run_dir = args.run
    result = train(config)
    print(json.dumps(result, indent=2))
    return 0


def command_evaluate(args: argparse.Namespace) -> int:
    from captioner.evaluate import evaluate_run

    metrics = evaluate_run(args.run, split=args.split, beam_size=args.beam, length_penalty=args.length_penalty,
                           rerank_neighbours=args.rerank_neighbours, rerank_weight=args.rerank_weight,
                           flip_ensemble=args.flip_ensemble, grounding=args.grounding, fallback=args.fallback,
                           max_images=args.max_images, output_dir=args.out, ensemble=args.ensemble)
    print(json.dumps(metrics, indent=2))
    return 0


def command_caption(args: argparse.Namespace) -> int:
    from captioner.data.images import list_images
    from captioner.inference import Captioner

    captioner = Captioner.load(args.run, ensemble=args.ensemble or ())
    inputs: list[Path] = []
    empty_folders = 0
    for raw in args.images:
        path = Path(raw)
        if path.is_dir():
            found = list_images(path)
            if not found:
                empty_folders += 1
                print(f"error: {path}: no images in this folder", file=sys.stderr)
            inputs += found
        else:
            inputs.append(path)
    if not inputs:
        print("error: nothing to caption", file=sys.stderr)
        return 1
    results = captioner.caption_many(inputs, beam_size=args.beam, n_best=args.n_best, batch_size=args.batch_size,
                                     rerank_neighbours=args.rerank_neighbours, rerank_weight=args.rerank_weight,
                                     flip_ensemble=args.flip_ensemble, grounding=args.grounding, fallback=args.fallback)
    failed = 0
    records = []
    for path, result in zip(inputs, results, strict=True):
        if isinstance(result, Exception):
            failed += 1
            records.append({"image": str(path), "error": str(result)})
            if not args.json:
                print(f"error: {result}", file=sys.stderr)
            continue
        records.append({"image": str(path), **result.to_dict()})
        if args.json:
            continue
        if args.n_best == 1:
            print(f"{path}\t{result.text}{confidence_note(result)}")
        else:
            print(f"{path}\t(score: what the list is ranked by; log p: the model's log-probability){confidence_note(result)}")
            for candidate in [result, *result.alternatives]:
                print(f"  score {number(candidate.score)}  log p {number(candidate.log_probability)}  {candidate.text}")
    if args.json:
        print(json.dumps(records, indent=2))
    if failed:
        print(f"{failed} of {len(inputs)} images failed", file=sys.stderr)
    return 1 if failed or empty_folders else 0


def number(value: float | None) -> str:
    return "       -" if value is None else f"{value:8.3f}"


def confidence_note(caption) -> str:
    """The text output's tail: "[confidence 0.94]", "[confidence 0.76, said less: names a dog the classifier does not
    see]" for a fallback, "[confidence 0.31, doubtful: ...]" under the doubtful mark, with the reasons."""
    if caption.confidence is None:
        return ""
    labels = [label for label, shown in (("doubtful", caption.doubtful), ("said less", caption.source == "fallback")) if shown]
    reasons = "; ".join(caption.doubts)
    tail = f", {' and '.join(labels)}" + (f": {reasons}" if reasons else "") if labels else ""
    return f"\t[confidence {caption.confidence:.2f}{tail}]"


def command_serve(args: argparse.Namespace) -> int:
    from captioner.web.app import serve

    serve(args.run, host=args.host, port=args.port, library=args.library)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="captioner", description="Write an English sentence describing a photo.")
    parser.add_argument("-v", "--verbose", action="store_true", help="show debug logging")
    commands = parser.add_subparsers(dest="command", required=True)

    prepare = commands.add_parser("prepare", help="read Flickr8k, write prepared captions and vocabulary")
    prepare.add_argument("--data", help="Flickr8k folder (default: $FLICKR8K_DIR or data/flickr8k)")
    prepare.add_argument("--out", help="where to write (default: data.prepared_dir)")
    _add_config_arguments(prepare)
    prepare.set_defaults(handler=command_prepare)

    download = commands.add_parser("download", help="download Flickr8k from its public mirror (when no local copy exists)")
    download.add_argument("--out", default=default_data_dir(),
                          help="where to put it (default: $FLICKR8K_DIR or data/flickr8k, where `prepare` looks)")
    download.set_defaults(handler=command_download)

    features = commands.add_parser("features", help="extract and cache grid features for the prepared images")
    features.add_argument("--encoder", help="encoder name (default: encoder.name of the config)")
    _add_config_arguments(features)
    features.set_defaults(handler=command_features)

    train = commands.add_parser("train", help="train a decoder; resumes a killed run in the same run folder")
    train.add_argument("--run", help="run folder (default: run_dir of the config)")
    _add_config_arguments(train)
    train.set_defaults(handler=command_train)

    evaluate = commands.add_parser("evaluate", help="score a run on a split; writes metrics.json, report.md, pictures")
    evaluate.add_argument("run")
    evaluate.add_argument("--split", default="test", choices=["train", "dev", "test"])
    evaluate.add_argument("--beam", type=positive_int, default=None, help="beam size (default: the run's decode.beam_size)")
    evaluate.add_argument("--length-penalty", type=float, default=None)
    _add_decoding_arguments(evaluate)
    evaluate.add_argument("--max-images", type=int, default=0, help="score only the first N images (0: all)")
    evaluate.add_argument("--out", help="output folder (default: RUN/eval-SPLIT, or RUN/eval-SPLIT-ensemble); with it the "
                                        "run's own metrics.json is left as it is")
    evaluate.add_argument("--ensemble", nargs="+", metavar="RUN", help="more runs (same encoder and vocabulary) to decode with RUN as one")
    evaluate.set_defaults(handler=command_evaluate)

    caption = commands.add_parser("caption", help="caption images or folders of images")
    caption.add_argument("run")
    caption.add_argument("images", nargs="+", help="image files or folders")
    caption.add_argument("--beam", type=positive_int, default=None)
    caption.add_argument("--n-best", type=positive_int, default=1)
    _add_decoding_arguments(caption)
    caption.add_argument("--batch-size", type=positive_int, default=16)
    caption.add_argument("--json", action="store_true", help="print JSON instead of text")
    caption.add_argument("--ensemble", nargs="+", metavar="RUN", help="more runs (same encoder and vocabulary) to decode with RUN as one")
    caption.set_defaults(handler=command_caption)

    from captioner.library.commands import add_commands

    add_commands(commands)

    from captioner.alttext import photos, site

    photos.add_command(commands)
    site.add_command(commands)

    serve = commands.add_parser("serve", help="web page and HTTP API")
    serve.add_argument("run")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--library", metavar="FILE", help="also serve this photo library (made by `captioner index`): "
                                                         "search its photos by words at /library")
    serve.set_defaults(handler=command_serve)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING, format="%(levelname)s: %(message)s")
    try:
        return args.handler(args)
    except CaptionerError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except sqlite3.Error as error:  # a library write that failed (a full disk): the transaction rolled back whole
        print(f"error: library: {error}; nothing of the unfinished batch was written", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
