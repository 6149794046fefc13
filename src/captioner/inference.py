"""Python API: `Captioner.load(run).caption([path, pil_image, raw_bytes])`."""
from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from captioner import people
from captioner.checkpoint import load_run
from captioner.confidence import DOUBTFUL_BELOW
from captioner.config import DecodeConfig
from captioner.data.images import ImageInput, describe, load_image
from captioner.decoding import EnsembleDecoder, FlipEnsembleDecoder, Hypothesis, beam_search
from captioner.encoders import Encoder, mirror_pixels
from captioner.errors import CaptionerError, ImageError
from captioner.grounded import calibration, choose, needs_people, signals
from captioner.grounding import Recogniser, Recognition
from captioner.reranking import MEMORY_FILE, CaptionMemory

log = logging.getLogger(__name__)

ENCODE_CHUNK = 2  # views per encoder call at inference (a photo and its mirror count as two)


@dataclass
class Caption:
    text: str
    tokens: list[str]
    log_probability: float | None  # natural log of the caption's probability under the model; None for a fallback
    score: float | None  # the ranking score: log-probability (length-normalised when asked), plus the consensus when reranked
    attention: np.ndarray  # (len(tokens) + finished, grid, grid): where the model looked for each word and <end>
    finished: bool = True  # False when the caption hit the length limit before <end>
    alternatives: list[Caption] = field(default_factory=list)  # the other n-best candidates
    # grounding (captioner.grounded), on the best caption only: "decoder", or "fallback" when every candidate
    # conflicted with what the classifier recognised; why the decoder's first candidate was passed over; the
    # confidence in [0, 1] that the caption's subject is right (None when the run's encoder is not calibrated)
    source: str = "decoder"
    doubts: list[str] = field(default_factory=list)
    confidence: float | None = None
    recognised: list[dict[str, Any]] = field(default_factory=list)  # the classifier's most probable words

    @property
    def doubtful(self) -> bool:
        return self.confidence is not None and self.confidence < DOUBTFUL_BELOW

    def to_dict(self, *, attention: bool = False) -> dict[str, Any]:
        record: dict[str, Any] = {"text": self.text, "log_probability": _rounded(self.log_probability),
                                  "score": _rounded(self.score), "tokens": self.tokens, "finished": self.finished}
        if self.confidence is not None or self.source != "decoder" or self.recognised:
            record |= {"confidence": _rounded(self.confidence), "doubtful": self.doubtful, "source": self.source,
                       "doubts": self.doubts, "recognised": self.recognised}
        if attention:  # float64 first, so the rounded weights print as short decimals
            record["attention"] = np.round(self.attention.astype(np.float64), 4).tolist()
        if self.alternatives:
            record["alternatives"] = [item.to_dict(attention=attention) for item in self.alternatives]
        return record


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


class Captioner:
    """A trained run ready to caption images: encoder + decoder + vocabulary + decoding defaults.

    `ensemble` names more runs trained on the same encoder and vocabulary; their decoders then vote
    with the run's own at every step (averaged log-probabilities). Decoding defaults are the first run's, and so
    is the caption memory that consensus reranking reads (loaded on first use).
    """

    def __init__(self, run_dir: str | Path, *, ensemble: Sequence[str | Path] = ()):
        run = load_run(run_dir)
        self.run_dir = Path(run_dir)
        self.config = run.config
        self.info = run.info
        self.vocabulary = run.vocabulary
        self.decoder = run.decoder
        self.encoder = Encoder(run.config.encoder.name)
        if self.encoder.weights_sha256 != run.info["encoder"].get("weights_sha256"):
            log.warning("encoder weights differ from the ones this run was trained with; captions may be worse")
        if ensemble:
            members = [load_run(member) for member in ensemble]
            for member in members:
                if member.vocabulary.words != run.vocabulary.words:
                    raise CaptionerError(f"cannot ensemble {member.folder} with {run_dir}: their vocabularies differ")
                if member.info["encoder"] != run.info["encoder"]:
                    raise CaptionerError(f"cannot ensemble {member.folder} with {run_dir}: they were trained on different encoders")
            self.decoder = EnsembleDecoder([run.decoder, *(member.decoder for member in members)])
        self._memory: CaptionMemory | None = None
        # grounding needs the encoder's ImageNet head and thresholds chosen for this encoder; else captions go ungrounded
        self.grounding, self.confidence_model = calibration(run.config.encoder.name, run_dir)
        self.recogniser = Recogniser.for_encoder(self.encoder) if self.grounding is not None else None

    @property
    def memory(self) -> CaptionMemory:
        """The training captions that consensus reranking compares candidates with."""
        if self._memory is None:
            path = self.run_dir / MEMORY_FILE
            if not path.is_file():
                raise CaptionerError(f"{self.run_dir} has no {MEMORY_FILE} for consensus reranking; `captioner train` with "
                                     "the run's config and --run writes it (a finished run is not trained again)")
            self._memory = CaptionMemory.load(path)
        return self._memory

    @classmethod
    def load(cls, run_dir: str | Path, *, ensemble: Sequence[str | Path] = ()) -> Captioner:
        return cls(run_dir, ensemble=ensemble)

    def encode(self, images: Sequence[ImageInput], *, flip_ensemble: bool | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Images -> what `decode` reads (see `encode_pixels`); raises ImageError for the first bad one."""
        pixels = torch.stack([self.encoder.preprocess(load_image(image)) for image in images])
        return self.encode_pixels(pixels, flip_ensemble=flip_ensemble)

    def encode_pixels(self, pixels: torch.Tensor, *, flip_ensemble: bool | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Preprocessed (batch, 3, size, size) photos -> their (batch, pixels, channels) grid, and with flip_ensemble
        (default: the run's) the mirrored photos' grid, else None. Both views go through the encoder as one batch."""
        if not self.decode_settings(flip_ensemble=flip_ensemble).flip_ensemble:
            return self._encode_in_chunks(pixels), None
        views = torch.stack([pixels, mirror_pixels(pixels)], dim=1).flatten(0, 1)  # photo, its mirror, next photo, ...
        grid = self._encode_in_chunks(views).unflatten(0, (pixels.shape[0], 2))
        return grid[:, 0], grid[:, 1]

    def _encode_in_chunks(self, pixels: torch.Tensor) -> torch.Tensor:
        # the encoder is 3-4 times slower per photo in batches of 32 views than of 4 on these CPUs (cache misses of
        # the big early feature maps: docs/experiments.md, section 10), so it sees a few views at a time
        return torch.cat([self.encoder.encode(chunk) for chunk in pixels.split(ENCODE_CHUNK)])

    def decode(self, grid: torch.Tensor, mirrored: torch.Tensor | None = None, *, beam_size: int | None = None,
               n_best: int = 1, length_penalty: float | None = None, max_length: int | None = None,
               rerank_neighbours: int | None = None, rerank_weight: float | None = None,
               flip_ensemble: bool | None = None, grounding: bool | None = None, fallback: bool | None = None,
               photos: Sequence[ImageInput | None] | None = None) -> list[Caption]:
        """Grid features (and the mirrored photos' grid, which flip_ensemble needs) -> the best caption per image,
        with the other n-best as `alternatives`.

        Unset options take the run's decode settings; with rerank_neighbours > 0 every beam candidate is
        reranked by consensus with the nearest training photos' captions before the n-best are taken; with
        grounding (captioner.grounded) the first candidate that agrees with the encoder's classifier leads, or the
        fallback caption when none does, and the best caption gets its confidence. `photos` are the batch's photos
        as the caller has them (paths, bytes, PIL images; None for one not kept): the person detector
        (captioner.people) reads one again only where its answer decides. Without them, or without the detector,
        grounding reads clothing alone.
        """
        settings = self.decode_settings(beam_size=beam_size, length_penalty=length_penalty, max_length=max_length,
                                        rerank_neighbours=rerank_neighbours, rerank_weight=rerank_weight,
                                        flip_ensemble=flip_ensemble, grounding=grounding, fallback=fallback)
        beam_size = max(settings.beam_size, n_best)
        reranking = settings.rerank_neighbours > 0
        grounded = settings.grounding and self.recogniser is not None
        results = self.beam_hypotheses(grid, mirrored, beam_size=beam_size,
                                       n_best=beam_size if reranking or grounded else n_best, length_penalty=settings.length_penalty,
                                       max_length=settings.max_length, flip_ensemble=settings.flip_ensemble)
        if reranking:
            results = self.memory.rerank(grid, results, neighbours=settings.rerank_neighbours, weight=settings.rerank_weight)
        kept = None if grounded else n_best  # grounding may pick any candidate of the beam
        candidates = [[self._to_caption(hypothesis) for hypothesis in hypotheses[:kept]] for hypotheses in results]
        if not grounded:
            return [self._with_alternatives(converted[0], converted[1:n_best]) for converted in candidates]
        assert self.recogniser is not None and self.grounding is not None
        recognitions = self.recogniser.recognise(grid, mirrored if settings.flip_ensemble else None)
        familiarities = self.familiarity(grid)
        captions = []
        for index, (converted, recognition, familiarity) in enumerate(zip(candidates, recognitions, familiarities, strict=True)):
            tokens = [caption.tokens for caption in converted]
            if photos is not None and needs_people(tokens, recognition, familiarity, self.grounding):
                recognition = self._with_people(recognition, photos[index])
            choice = choose(tokens, recognition, familiarity, self.grounding,
                            fallback=settings.fallback)
            if choice.index is None:
                words = choice.text.split()
                best = Caption(choice.text, words, None, None, np.zeros((0, *converted[0].attention.shape[1:]), np.float32),
                               source="fallback")
                others = converted[: n_best - 1]
            else:
                best = converted[choice.index]
                others = [caption for index, caption in enumerate(converted) if index != choice.index][: n_best - 1]
            best.doubts = choice.conflicts
            best.recognised = recognition.to_dict(words=5)["words"]
            if self.confidence_model is not None:
                best.confidence = self.confidence_model(signals(best.tokens, recognition, familiarity, is_fallback=choice.index is None,
                                                                person_evidence=self.grounding.person_evidence))
            captions.append(self._with_alternatives(best, others))
        return captions

    @staticmethod
    def _with_people(recognition: Recognition, source: ImageInput | None) -> Recognition:
        found = people.detector()
        if found is None or source is None:
            return recognition
        try:
            photo = people.read(source)
        except (ImageError, OSError) as error:  # the photo went away after it was encoded: judge without it
            log.warning("person detector skipped: %s", error)
            return recognition
        try:
            seen = found.seen(photo)
        except Exception as error:  # a detector failure costs this photo the detector's answer, not the batch
            log.warning("person detector failed: %s: %s", type(error).__name__, error)
            return recognition
        return dataclasses.replace(recognition, people_seen=seen)

    @staticmethod
    def _with_alternatives(best: Caption, others: list[Caption]) -> Caption:
        best.alternatives = others
        return best

    def familiarity(self, grid: torch.Tensor) -> list[float | None]:
        """Each photo's cosine similarity to its nearest training photo; None for all without a caption memory."""
        if not (self.run_dir / MEMORY_FILE).is_file():
            return [None] * grid.shape[0]
        return self.memory.familiarity(grid).tolist()

    def decode_settings(self, **options: Any) -> DecodeConfig:
        """The run's decode settings with the given options in place of its own; None (and 0 for the beam size
        and maximum length) means the run's."""
        unset = {key for key in ("beam_size", "max_length") if options.get(key) == 0}
        return dataclasses.replace(self.config.decode, **{key: value for key, value in options.items()
                                                          if value is not None and key not in unset})

    def beam_hypotheses(self, grid: torch.Tensor, mirrored: torch.Tensor | None = None, *, beam_size: int, n_best: int,
                        length_penalty: float | None = None, max_length: int | None = None,
                        flip_ensemble: bool | None = None) -> list[list[Hypothesis]]:
        """Beam search with this run's vocabulary; unset options take the run's decode settings."""
        settings = self.decode_settings(length_penalty=length_penalty, max_length=max_length, flip_ensemble=flip_ensemble)
        decoder = self.decoder
        if settings.flip_ensemble:
            if mirrored is None:
                raise CaptionerError("flip_ensemble decoding needs the mirrored photos' grid too (Captioner.encode gives both)")
            decoder, grid = FlipEnsembleDecoder(self.decoder), torch.cat([grid, mirrored], dim=-1)
        return beam_search(
            decoder, grid, start_id=self.vocabulary.start_id, end_id=self.vocabulary.end_id,
            beam_size=beam_size, n_best=n_best, suppress_ids=self.vocabulary.never_emitted_ids,
            length_penalty=settings.length_penalty, max_length=settings.max_length,
        )

    def _to_caption(self, hypothesis: Hypothesis) -> Caption:
        words = self.vocabulary.decode(hypothesis.token_ids)
        grid = int(round(math.sqrt(hypothesis.attention.shape[1])))
        attention = hypothesis.attention.numpy().reshape(-1, grid, grid)
        return Caption(" ".join(words), words, hypothesis.log_probability, hypothesis.score, attention, hypothesis.finished)

    def caption(self, images: ImageInput | Sequence[ImageInput], **options: Any) -> list[Caption]:
        """Caption one image or a list (paths, PIL images, raw bytes); raises ImageError on a bad one."""
        if isinstance(images, (str, Path, bytes, bytearray)) or not isinstance(images, Sequence):
            images = [images]
        results = self.caption_many(images, **options)
        for result in results:
            if isinstance(result, ImageError):
                raise result
        return results  # type: ignore[return-value]

    def caption_many(self, images: Sequence[ImageInput], *, batch_size: int = 16, **options: Any) -> list[Caption | ImageError]:
        """Caption every image, in batches; a bad image gives its ImageError in its place, the rest go on."""
        results: list[Caption | ImageError] = [ImageError("not captioned")] * len(images)
        for start in range(0, len(images), batch_size):
            pixels, positions = [], []
            for position in range(start, min(start + batch_size, len(images))):
                try:
                    pixels.append(self.encoder.preprocess(load_image(images[position])))
                    positions.append(position)
                except ImageError as error:
                    results[position] = error
                except Exception as error:  # never let one odd input sink the batch
                    results[position] = ImageError(f"{describe(images[position])}: {type(error).__name__}: {error}")
            if pixels:
                views = self.encode_pixels(torch.stack(pixels), flip_ensemble=options.get("flip_ensemble"))
                captions = self.decode(*views, photos=[images[position] for position in positions], **options)
                for position, caption in zip(positions, captions, strict=True):
                    results[position] = caption
        return results
