"""Greedy decoding, batched beam search and sampling over a decoder's `init_state` / `step` interface,
and an ensemble of decoders behind that same interface."""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch


@dataclass
class Hypothesis:
    token_ids: list[int]  # words only, without <start>/<end>
    log_probability: float  # sum of the token log-probabilities, <end> included when emitted
    score: float  # what the hypotheses were ranked by (length-normalised when asked)
    attention: torch.Tensor  # (steps, pixels): one row per emitted token, <end> included when emitted
    finished: bool  # False when the caption hit max_length without <end>


@dataclass
class EnsembleState:
    states: list  # one decoding state per member

    def select(self, index: torch.Tensor) -> EnsembleState:
        return EnsembleState([state.select(index) for state in self.states])


class EnsembleDecoder:
    """Decoders trained on the same encoder and vocabulary, decoding as one: their log-probabilities are
    averaged each step (then renormalised), their attention maps too."""

    def __init__(self, decoders: Sequence[torch.nn.Module]):
        if not decoders:
            raise ValueError("an ensemble needs at least one decoder")
        sizes = {decoder.vocab_size for decoder in decoders}
        if len(sizes) != 1:
            raise ValueError(f"ensemble members have different vocabulary sizes: {sorted(sizes)}")
        self.decoders = list(decoders)
        self.vocab_size = sizes.pop()

    def init_state(self, grid: torch.Tensor) -> EnsembleState:
        return EnsembleState([decoder.init_state(grid) for decoder in self.decoders])

    def step(self, state: EnsembleState, previous_tokens: torch.Tensor) -> tuple[torch.Tensor, EnsembleState, torch.Tensor]:
        outputs = [decoder.step(member, previous_tokens) for decoder, member in zip(self.decoders, state.states, strict=True)]
        log_probs = torch.stack([log_probs for log_probs, _, _ in outputs]).mean(dim=0).log_softmax(dim=-1)  # (rows, vocab)
        weights = torch.stack([self._in_photo_layout(position, weights)
                               for position, (_, _, weights) in enumerate(outputs)]).mean(dim=0)  # (rows, pixels)
        return log_probs, EnsembleState([member for _, member, _ in outputs]), weights

    def _in_photo_layout(self, member: int, weights: torch.Tensor) -> torch.Tensor:
        """Member `member`'s (rows, pixels) attention as a map of the photo the caller passed."""
        return weights


class FlipEnsembleDecoder(EnsembleDecoder):
    """A decoder (or an ensemble) that reads each photo twice, as is and mirrored left to right, and averages the
    two views' log-probabilities each step: test-time augmentation. Its grid holds both views side by side,
    (images, pixels, 2 x channels), the photo's channels first; the reported attention is on the photo as is."""

    def __init__(self, decoder):
        super().__init__([decoder, decoder])

    def init_state(self, grid: torch.Tensor) -> EnsembleState:
        photo, mirrored = grid.chunk(2, dim=-1)
        return EnsembleState([self.decoders[0].init_state(photo), self.decoders[1].init_state(mirrored)])

    def _in_photo_layout(self, member: int, weights: torch.Tensor) -> torch.Tensor:
        if member == 0:
            return weights
        side = math.isqrt(weights.shape[1])  # square grids, row-major: mirroring reverses each row
        return weights.view(-1, side, side).flip(-1).reshape(weights.shape)


def _normalised(log_probability: float, length: int, length_penalty: float) -> float:
    return log_probability / (max(length, 1) ** length_penalty) if length_penalty else log_probability


def suppress_tokens(log_probs: torch.Tensor, suppress_ids: Sequence[int]) -> torch.Tensor:
    """Make tokens a caption must never contain (<pad>, <start>, <unk>) impossible; (rows, vocab) scores."""
    if not suppress_ids:
        return log_probs
    return log_probs.index_fill(1, torch.tensor(list(suppress_ids)), float("-inf"))


@torch.inference_mode()
def greedy_decode(decoder, grid: torch.Tensor, *, start_id: int, end_id: int, max_length: int = 30,
                  suppress_ids: Sequence[int] = ()) -> list[Hypothesis]:
    """Most likely word at each step, for a batch of images; (images, pixels, channels) -> one hypothesis each."""
    state = decoder.init_state(grid)
    images = grid.shape[0]
    tokens = torch.full((images,), start_id, dtype=torch.long)
    chosen, attentions, log_probs = [], [], []
    running = torch.ones(images, dtype=torch.bool)
    for step in range(max_length + 1):  # max_length words, then <end>
        step_log_probs, state, weights = decoder.step(state, tokens)  # (images, vocab), (images, pixels)
        step_log_probs = suppress_tokens(step_log_probs, suppress_ids)
        best_log_prob, tokens = step_log_probs.max(dim=1)
        chosen.append(tokens)
        attentions.append(weights)
        # a word past max_length is cut off, so it does not count towards the caption's probability
        counted = running & ((tokens == end_id) | (step < max_length))
        log_probs.append(torch.where(counted, best_log_prob, torch.zeros_like(best_log_prob)))
        running &= tokens != end_id
        if not running.any():
            break
    chosen_ids = torch.stack(chosen, dim=1)  # (images, steps)
    attention = torch.stack(attentions, dim=1)  # (images, steps, pixels)
    total = torch.stack(log_probs, dim=1).sum(dim=1)  # (images,)
    results = []
    for row in range(images):
        words, finished = _split_at_end(chosen_ids[row].tolist(), end_id, max_length)
        steps = len(words) + (1 if finished else 0)
        value = float(total[row])
        results.append(Hypothesis(words, value, value, attention[row, :steps].clone(), finished))
    return results


def _split_at_end(ids: list[int], end_id: int, max_length: int) -> tuple[list[int], bool]:
    """Words before the first <end> (finished), or the first max_length words when there is none."""
    if end_id in ids[: max_length + 1]:
        return ids[: ids.index(end_id)], True
    return ids[:max_length], False


@dataclass
class SampledCaptions:
    captions: list[tuple[list[int], bool]]  # (words, finished) per sample, image-major
    log_probabilities: torch.Tensor  # (samples,) each caption's log-probability under the sampling policy
    tokens: int  # tokens those log-probabilities sum over: the words, plus <end> where it was drawn


def sample_captions(decoder, grid: torch.Tensor, *, samples: int, start_id: int, end_id: int, max_length: int = 20,
                    suppress_ids: Sequence[int] = ()) -> SampledCaptions:
    """`samples` captions per image drawn from the decoder's distribution (torch's global RNG), without `suppress_ids`.

    Captions are image-major: samples [i * samples, (i + 1) * samples) are image i's. With autograd on, the
    log-probabilities are differentiable, so self-critical training needs no second, teacher-forced pass over
    the samples; call it under `torch.no_grad()` otherwise.
    """
    if samples < 1:
        raise ValueError(f"samples must be >= 1, got {samples}")
    images = grid.shape[0]
    rows = images * samples
    state = decoder.init_state(grid).select(torch.arange(images).repeat_interleave(samples))
    tokens = torch.full((rows,), start_id, dtype=torch.long)
    chosen = torch.full((rows, max_length + 1), end_id, dtype=torch.long)  # max_length words, then <end>
    live = torch.arange(rows)  # the rows of `chosen` still in the decoder's batch
    running = torch.ones(rows, dtype=torch.bool)  # per live row: no <end> drawn yet
    scored_rows, scored_log_probs = [], []  # per step: which samples' tokens count, and their log-probabilities
    for step in range(max_length + 1):
        log_probs, state, _ = decoder.step(state, tokens)
        policy = suppress_tokens(log_probs, suppress_ids).log_softmax(dim=1)  # renormalised over the tokens that may be drawn
        tokens = _draw(policy.detach().exp())
        chosen[live, step] = torch.where(running, tokens, torch.full_like(tokens, end_id))
        # a word past max_length is cut off, so it does not count towards the caption's probability
        counted = running & ((tokens == end_id) | (step < max_length))
        scored_rows.append(live[counted])
        scored_log_probs.append(policy.gather(1, tokens.unsqueeze(1)).squeeze(1)[counted])
        running &= tokens != end_id
        if not running.any():
            break
        # most samples end long before the longest: drop finished rows once a quarter of the batch is done,
        # so steps get cheaper while the state (the grid's keys for the Transformer) is copied only a few times
        if int(running.sum()) <= 0.75 * len(live):
            keep = running.nonzero().squeeze(1)
            state, tokens, live, running = state.select(keep), tokens[keep], live[keep], running[keep]
    values = torch.cat(scored_log_probs)
    log_probabilities = values.new_zeros(rows).index_add(0, torch.cat(scored_rows), values)
    return SampledCaptions([_split_at_end(ids, end_id, max_length) for ids in chosen.tolist()], log_probabilities, len(values))


def _draw(probabilities: torch.Tensor) -> torch.Tensor:
    """One token per row of (rows, vocab) unnormalised probabilities, by inverting the cumulative distribution.

    One uniform number per row: torch.multinomial draws one per vocabulary entry, which was a fifth of sampling's time.
    """
    cumulative = probabilities.cumsum(dim=1)
    threshold = torch.rand(cumulative.shape[0], 1) * cumulative[:, -1:]
    return torch.searchsorted(cumulative, threshold, right=True).squeeze(1).clamp_(max=probabilities.shape[1] - 1)


@torch.inference_mode()
def beam_search(
    decoder,
    grid: torch.Tensor,
    *,
    start_id: int,
    end_id: int,
    beam_size: int = 3,
    max_length: int = 30,
    length_penalty: float = 0.0,
    n_best: int = 1,
    suppress_ids: Sequence[int] = (),
) -> list[list[Hypothesis]]:
    """Beam search for a batch of images at once; returns the `n_best` best hypotheses per image.

    Hypotheses are ranked by log-probability / length**length_penalty (length counts <end>);
    `suppress_ids` are never emitted. A beam that reaches `max_length` words is finished if <end>
    is its most likely next token, else kept as an unfinished caption scored without <end> (as in greedy).
    """
    if beam_size < 1 or n_best < 1:
        raise ValueError(f"beam_size and n_best must be >= 1, got {beam_size} and {n_best}")
    n_best = min(n_best, beam_size)
    images = grid.shape[0]
    state = decoder.init_state(grid).select(torch.arange(images).repeat_interleave(beam_size))  # (images*beam) rows
    # only the first beam is live at the start, so the first step does not pick the same word K times
    beam_scores = torch.full((images, beam_size), float("-inf"))
    beam_scores[:, 0] = 0.0
    tokens = torch.full((images * beam_size,), start_id, dtype=torch.long)
    history = torch.empty((images * beam_size, 0), dtype=torch.long)
    attention_history = torch.empty((images * beam_size, 0, grid.shape[1]))
    finished: list[list[Hypothesis]] = [[] for _ in range(images)]
    done = [False] * images
    for step in range(max_length + 1):
        log_probs, state, weights = decoder.step(state, tokens)  # (images*beam, vocab), (images*beam, pixels)
        log_probs = suppress_tokens(log_probs, suppress_ids)
        vocab = log_probs.shape[1]
        if step == max_length:  # out of room: every live beam stops here, even when <end> is impossible
            ends = log_probs.argmax(dim=1) == end_id  # (images*beam,)
            for image in range(images):
                for row in range(image * beam_size, (image + 1) * beam_size):
                    value = float(beam_scores.view(-1)[row])
                    if done[image] or not math.isfinite(value):
                        continue
                    ids, attention = history[row].tolist(), attention_history[row]
                    if ends[row]:
                        value += float(log_probs[row, end_id])
                        attention = torch.cat([attention, weights[row].unsqueeze(0)])
                    score = _normalised(value, len(ids) + int(ends[row]), length_penalty)
                    finished[image].append(Hypothesis(ids, value, score, attention, bool(ends[row])))
            break
        totals = (beam_scores.view(-1, 1) + log_probs).view(images, beam_size * vocab)
        candidate_scores, candidate_ids = totals.topk(2 * beam_size, dim=1)  # (images, 2*beam)
        origins = candidate_ids // vocab  # which beam each candidate extends
        words = candidate_ids % vocab
        is_end = words == end_id
        rows = torch.arange(images).unsqueeze(1) * beam_size + origins  # (images, 2*beam) flat rows
        # hypotheses that end among the top `beam` candidates are finished
        for image, rank in (is_end[:, :beam_size] & torch.isfinite(candidate_scores[:, :beam_size])).nonzero().tolist():
            if done[image]:
                continue
            row = int(rows[image, rank])
            ids = history[row].tolist()
            value = float(candidate_scores[image, rank])
            attention = torch.cat([attention_history[row], weights[row].unsqueeze(0)])
            hypothesis = Hypothesis(ids, value, _normalised(value, len(ids) + 1, length_penalty), attention, True)
            finished[image].append(hypothesis)
        # the best `beam` candidates that do not end carry on
        order = (is_end.long() * (2 * beam_size) + torch.arange(2 * beam_size)).argsort(dim=1)[:, :beam_size]
        keep_rows = rows.gather(1, order).view(-1)  # (images*beam,)
        beam_scores = candidate_scores.gather(1, order)
        beam_scores = torch.where(is_end.gather(1, order), torch.full_like(beam_scores, float("-inf")), beam_scores)
        tokens = words.gather(1, order).view(-1)
        history = torch.cat([history[keep_rows], tokens.unsqueeze(1)], dim=1)
        attention_history = torch.cat([attention_history[keep_rows], weights[keep_rows].unsqueeze(1)], dim=1)
        state = state.select(keep_rows)
        # an image is done once it has `beam` finished hypotheses that its best live beam cannot beat:
        # log-probabilities only fall (with a length penalty this is the usual estimate, not a bound)
        best_live = beam_scores.max(dim=1).values  # (images,)
        for image in range(images):
            if not done[image] and len(finished[image]) >= beam_size:
                worst_kept = sorted((hypothesis.score for hypothesis in finished[image]), reverse=True)[beam_size - 1]
                done[image] = _normalised(float(best_live[image]), history.shape[1] + 1, length_penalty) <= worst_kept
        if all(done):
            break
    results = []
    for image in range(images):
        ranked = sorted(finished[image], key=lambda hypothesis: hypothesis.score, reverse=True)
        results.append(ranked[:n_best])
    return results
