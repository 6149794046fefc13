"""Sweep a first grounded decoding on the dev halves: the classifier's word probabilities biasing beam search.

    python benchmarks/tune_grounding_bias.py runs/default --bonus 0,2,4,8 --penalty 0,3 [--fallback 0,1] [--flickr-images 300]

Each step of beam search adds, to the log-probability of every vocabulary word the classifier maps classes to,
`bonus` x that word's recognised probability (shallow fusion, then renormalised); and when the classifier is
confident of a subject (its most probable specific word above --confident) it takes `penalty` off the words
that contradict it: person words when there is no person evidence, and subject nouns it gives almost no
probability. Printed: one JSON line per setting with the real photos' dev-half subject accuracy and
invented-person rate, and Flickr8k dev BLEU-4 and CIDEr (fast scores, no Java) on its first images.
An experiment, not the product: the test halves are not read.
"""
from __future__ import annotations

import argparse
import json
from dataclasses import dataclass

import torch
from eval_real_photos import photo_files
from eval_recognition import GENERIC
from real_photos.scoring import PERSON_WORDS, load_photos, score_photo, summarise

from captioner.data.flickr import load_prepared
from captioner.data.images import load_image
from captioner.grounding import Recogniser, Recognition
from captioner.inference import Captioner
from captioner.metrics import fast_scores


@dataclass
class GroundedState:
    inner: object
    image_rows: torch.Tensor  # which photo each row decodes

    def select(self, index: torch.Tensor) -> GroundedState:
        return GroundedState(self.inner.select(index), self.image_rows.index_select(0, index))


class GroundedDecoder:
    """A decoder whose log-probabilities get a per-photo additive bias every step, renormalised."""

    def __init__(self, decoder, bias: torch.Tensor):
        self.decoder, self.bias, self.vocab_size = decoder, bias, decoder.vocab_size

    def init_state(self, grid: torch.Tensor) -> GroundedState:
        return GroundedState(self.decoder.init_state(grid), torch.arange(grid.shape[0]))

    def step(self, state: GroundedState, tokens: torch.Tensor):
        log_probs, inner, weights = self.decoder.step(state.inner, tokens)
        biased = (log_probs + self.bias.index_select(0, state.image_rows)).log_softmax(dim=-1)
        return biased, GroundedState(inner, state.image_rows), weights


def word_bias(recognitions: list[Recognition], vocabulary, mapped_words: list[str], unfamiliar: list[bool | None], *, bonus: float,
              penalty: float, confident: float) -> torch.Tensor:
    """(photos, vocab) additive log-probability bias from what the classifier recognised in each photo; nothing for
    the photos that look like training photos (`unfamiliar` False)."""
    ids = {word: index for index, word in enumerate(vocabulary.words)}
    mapped = [word for word in mapped_words if word in ids]  # the single-token words the class map uses
    persons = [ids[word] for word in PERSON_WORDS if word in ids]
    bias = torch.zeros(len(recognitions), len(vocabulary.words))
    for row, recognition in enumerate(recognitions):
        if unfamiliar[row] is False:
            continue
        if penalty and recognition.person_evidence < 0.05 and unfamiliar[row] is not None:
            bias[row, persons] -= penalty  # a photo unlike the training photos, with no sign of a person
        for word in mapped:
            bias[row, ids[word]] += bonus * recognition.words.get(word, 0.0)
        specific = [probability for word, probability in recognition.words.items() if word not in GENERIC]
        if penalty and specific and specific[0] >= confident:
            if recognition.person_evidence < 0.05 and unfamiliar[row] is None:
                bias[row, persons] -= penalty
            for word in mapped:
                if word not in GENERIC and recognition.words.get(word, 0.0) < 0.005:
                    bias[row, ids[word]] -= penalty
    return bias


def fall_back(caption: str, recognition: Recognition, confident: float) -> str:
    """Say less rather than something false: when the classifier is confident of a subject the caption does not
    name, a caption built from that subject alone."""
    specific = [(word, probability) for word, probability in recognition.words.items() if word not in GENERIC]
    if not specific or specific[0][1] < confident:
        return caption
    named = set(caption.split())
    if any(set(word.split()) <= named for word, _ in specific[:3]):
        return caption
    word = specific[0][0]
    return f"a photo of {'an' if word[0] in 'aeiou' else 'a'} {word}"


def unfamiliar_photos(captioner: Captioner, grid: torch.Tensor, threshold: float | None) -> list[bool | None]:
    """Per photo: whether it is less similar than `threshold` to its nearest training photo (pooled features,
    cosine); all None without a threshold (every photo is treated alike)."""
    if threshold is None:
        return [None] * grid.shape[0]
    familiarity = captioner.memory.familiarity(grid)
    return [bool(value < threshold) for value in familiarity]


def decode_grounded(captioner: Captioner, recogniser: Recogniser, grid, mirrored, setting) -> list[str]:
    recognitions = recogniser.recognise(grid)
    options = {key: setting[key] for key in ("bonus", "penalty", "confident")}
    unfamiliar = unfamiliar_photos(captioner, grid, setting["familiar"])
    bias = word_bias(recognitions, captioner.vocabulary, recogniser.words, unfamiliar, **options)
    plain = captioner.decoder
    captioner.decoder = GroundedDecoder(plain, bias)
    try:
        captions = [caption.text for caption in captioner.decode(grid, mirrored)]
    finally:
        captioner.decoder = plain
    if setting["fallback"]:
        captions = [fall_back(caption, recognition, setting["confident"]) if strange is not False else caption
                    for caption, recognition, strange in zip(captions, recognitions, unfamiliar, strict=True)]
    return captions


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run")
    parser.add_argument("--bonus", default="0,2,4")
    parser.add_argument("--penalty", default="0,3")
    parser.add_argument("--confident", type=float, default=0.3)
    parser.add_argument("--flickr-images", type=int, default=300)
    parser.add_argument("--fallback", default="0", help="0, 1 or 0,1: also try the fallback caption")
    parser.add_argument("--familiar", type=float, default=None,
                        help="ground only the photos less similar than this to their nearest training photo "
                             "(and penalise person words there whenever there is no person evidence)")
    args = parser.parse_args()
    captioner = Captioner.load(args.run)
    recogniser = Recogniser.for_encoder(captioner.encoder)
    photos = load_photos(split="dev")
    paths = photo_files(photos)
    real = captioner.encode([load_image(path) for path in paths])
    images_dir, splits, _ = load_prepared(captioner.config.data.prepared_dir)
    names = sorted(splits["dev"])[: args.flickr_images]
    flickr = captioner.encode([images_dir / name for name in names])  # with the mirrored grid when the run flips
    references = {name: [" ".join(words) for words in splits["dev"][name]] for name in names}
    settings = [{"bonus": float(bonus), "penalty": float(penalty), "confident": args.confident, "fallback": fallback == "1",
                 "familiar": args.familiar}
                for bonus in args.bonus.split(",") for penalty in args.penalty.split(",") for fallback in args.fallback.split(",")]
    for setting in settings:
        captions = decode_grounded(captioner, recogniser, *real, setting)
        summary = summarise(photos, [score_photo(photo, caption) for photo, caption in zip(photos, captions, strict=True)])
        flickr_captions = []
        for start in range(0, len(names), 50):
            chunk = slice(start, start + 50)
            mirrored = flickr[1][chunk] if flickr[1] is not None else None
            flickr_captions += decode_grounded(captioner, recogniser, flickr[0][chunk], mirrored, setting)
        scores = fast_scores(references, dict(zip(names, flickr_captions, strict=True)))
        print(json.dumps({**setting, "real_dev_subject_accuracy": summary["subject_accuracy"],
                          "real_dev_invented_person_rate": summary["invented_person_rate"],
                          "real_dev_invented_animal_rate": summary["invented_animal_rate"],
                          "flickr_dev_images": len(names), "flickr_dev_BLEU-4": round(scores["BLEU-4"], 4),
                          "flickr_dev_CIDEr": round(scores["CIDEr"], 4)}), flush=True)


if __name__ == "__main__":
    main()
