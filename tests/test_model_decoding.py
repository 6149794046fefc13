"""The decoders (attention LSTM, Transformer) and decoding: shapes, greedy vs beam, batching, n-best,
length penalty, no <end>, sampling, and the self-critical loss."""
from __future__ import annotations

import copy
import math

import pytest
import torch

from captioner.checkpoint import load_run
from captioner.config import Config, ModelConfig
from captioner.data.flickr import load_prepared
from captioner.data.text import Vocabulary
from captioner.decoding import EnsembleDecoder, FlipEnsembleDecoder, beam_search, greedy_decode, sample_captions
from captioner.errors import CaptionerError
from captioner.model import (
    AdditiveAttention,
    AttentionLSTMDecoder,
    DecoderState,
    TransformerDecoder,
    TransformerState,
    build_decoder,
    hand_written_attention_works,
)
from captioner.pipeline import open_prepared_features
from captioner.reward import SelfCriticalReward
from captioner.train import self_critical_loss, teacher_forced_log_probabilities

START, END = 1, 2


def random_decoder(vocab_size: int = 11, channels: int = 16, seed: int = 0) -> AttentionLSTMDecoder:
    torch.manual_seed(seed)
    return AttentionLSTMDecoder(vocab_size=vocab_size, encoder_channels=channels, embed_dim=8, feature_dim=12,
                                attention_dim=10, hidden_dim=14, dropout=0.0).eval()


def random_transformer(vocab_size: int = 11, channels: int = 16, seed: int = 0) -> TransformerDecoder:
    torch.manual_seed(seed)
    return TransformerDecoder(vocab_size=vocab_size, encoder_channels=channels, dim=16, layers=2, encoder_layers=1,
                              heads=4, ff_dim=32, dropout=0.0).eval()


RANDOM_DECODERS = {"lstm": random_decoder, "transformer": random_transformer}


@pytest.fixture(scope="module")
def trained(tiny_run):
    """The tiny run's decoder and the cached grids of all its images."""
    run = load_run(tiny_run)
    _, splits, _ = load_prepared(run.config.data.prepared_dir)
    cache = open_prepared_features(run.config, splits)
    names = cache.available(list(cache.index["images"]))
    return run, names, cache.load(names)


def without_end(decoder: torch.nn.Module) -> torch.nn.Module:
    """A copy of the decoder that can never emit <end>."""
    decoder = copy.deepcopy(decoder)
    with torch.no_grad():
        decoder.output.bias[END] = float("-inf")
    return decoder


# ---- the decoder ----

def test_teacher_forced_forward_shapes_and_packing():
    decoder = random_decoder()
    grid = torch.randn(2, 9, 16)  # (images, pixels, channels)
    lengths = torch.tensor([6, 5, 5, 3, 2])  # sorted longest first, <start> and <end> included
    captions = torch.zeros((5, 6), dtype=torch.long)
    for row, length in enumerate(lengths.tolist()):
        captions[row, :length] = torch.tensor([START, *range(4, 4 + length - 2), END])
    image_index = torch.tensor([0, 1, 0, 1, 1])
    output = decoder(grid, captions, lengths, image_index)
    tokens = int((lengths - 1).sum())
    assert output.logits.shape == (tokens, 11)
    assert output.targets.shape == (tokens,)
    # time-major packing: every caption's first target, then every running caption's second, ...
    expected = [captions[row, step + 1] for step in range(5) for row in range(5) if lengths[row] > step + 1]
    assert output.targets.tolist() == [int(token) for token in expected]
    assert output.attention_sums.shape == (5, 9)
    # each step's attention sums to 1, so a caption's total is its number of steps
    torch.testing.assert_close(output.attention_sums.sum(dim=1), (lengths - 1).float())


@pytest.mark.parametrize("kind", RANDOM_DECODERS)
def test_teacher_forcing_and_step_by_step_decoding_agree(kind):
    decoder = RANDOM_DECODERS[kind](seed=1)
    grid = torch.randn(2, 9, 16)
    captions = torch.tensor([[START, 5, 7, 4, END], [START, 6, END, 0, 0]])
    lengths, image_index = torch.tensor([5, 3]), torch.tensor([1, 0])
    with torch.no_grad():
        output = decoder(grid, captions, lengths, image_index)
        forced = output.logits.log_softmax(dim=-1)  # (tokens, vocab)
        state = decoder.init_state(grid).select(image_index)
        stepped = []
        for step in range(4):
            log_probs, state, _ = decoder.step(state, captions[:, step])
            stepped.append(log_probs)
    stepped_by_caption = torch.stack(stepped, dim=1)  # (captions, steps, vocab)
    pairs = _row_steps(output.rows)
    assert len(pairs) == int((lengths - 1).sum())
    assert output.targets.tolist() == [int(captions[row, step + 1]) for row, step in pairs]
    torch.testing.assert_close(torch.stack([stepped_by_caption[row, step] for row, step in pairs]), forced, rtol=1e-5, atol=1e-5)


def _row_steps(rows: torch.Tensor) -> list[tuple[int, int]]:
    """(caption, step) of each packed token, given which caption each token belongs to (steps in order per caption)."""
    seen: dict[int, int] = {}
    pairs = []
    for row in rows.tolist():
        pairs.append((row, seen.get(row, 0)))
        seen[row] = seen.get(row, 0) + 1
    return pairs


def test_step_attention_rows_sum_to_one():
    decoder = random_decoder()
    state = decoder.init_state(torch.randn(3, 9, 16))
    assert isinstance(state, DecoderState)
    assert state.memory.shape == (3, 9, 12) and state.hidden.shape == (3, 14)
    log_probs, state, weights = decoder.step(state, torch.full((3,), START))
    assert log_probs.shape == (3, 11)
    torch.testing.assert_close(log_probs.exp().sum(dim=1), torch.ones(3))
    assert weights.shape == (3, 9)
    assert bool((weights >= 0).all())
    torch.testing.assert_close(weights.sum(dim=1), torch.ones(3))


@pytest.mark.parametrize("per_image", [True, False], ids=["rows gathered per image", "one grid row per state row"])
@pytest.mark.parametrize("weights_used", [True, False], ids=["weights in the loss", "context alone"])
def test_attention_gives_autograds_values_and_gradients_bit_for_bit(per_image, weights_used):
    # training depends on this: a run trained before the hand-written backward existed has the same weights after it
    generator = torch.Generator().manual_seed(0)
    rows, pixels, grid_rows = 40, 49, 6 if per_image else 40
    image_rows = torch.randint(0, grid_rows, (rows,), generator=generator) if per_image else None
    inputs = [torch.randn(grid_rows, pixels, 24, generator=generator), torch.randn(grid_rows, pixels, 32, generator=generator),
              torch.randn(rows, 32, generator=generator), torch.randn(1, 32, generator=generator), torch.randn(1, generator=generator)]
    context_weight, weights_weight = torch.randn(rows, 24, generator=generator), torch.randn(rows, pixels, generator=generator)
    results = []
    for attend in (AdditiveAttention.apply, AdditiveAttention.reference):
        leaves = [tensor.clone().requires_grad_() for tensor in inputs]
        memory, keys, query, score_weight, score_bias = leaves
        context, weights = attend(memory, keys, image_rows, query, score_weight, score_bias)
        loss = (context * context_weight).sum() + ((weights * weights_weight).sum() if weights_used else 0)
        loss.backward()
        results.append([context, weights] + [leaf.grad for leaf in leaves])
    for fused, plain in zip(*results, strict=True):
        assert torch.equal(fused, plain)


def lstm_gradients(decoder: AttentionLSTMDecoder) -> list[torch.Tensor]:
    """The gradients of one teacher-forced step's loss on fixed inputs."""
    decoder.zero_grad()
    state = decoder.init_state(torch.randn(2, 9, 16, generator=torch.Generator().manual_seed(1)))
    log_probs, _, weights = decoder.step(state, torch.tensor([START, 5]))
    (log_probs[:, 3].sum() + weights.square().sum()).backward()
    return [parameter.grad.clone() for parameter in decoder.parameters() if parameter.grad is not None]


def test_training_falls_back_to_autograds_attention_when_torchs_private_ops_change(monkeypatch, caplog):
    # the hand-written backward calls torch._softmax_backward_data; a torch without it must still train, and say so
    hand_written_attention_works.cache_clear()
    assert hand_written_attention_works()
    expected = lstm_gradients(random_decoder())
    monkeypatch.delattr(torch, "_softmax_backward_data")
    hand_written_attention_works.cache_clear()
    try:
        with caplog.at_level("WARNING", logger="captioner.model"):
            gradients = lstm_gradients(random_decoder())
        assert not hand_written_attention_works()
        assert "hand-written backward does not work (AttributeError" in caplog.text and "uses autograd's" in caplog.text
        assert len(gradients) == len(expected) and all(torch.equal(a, b) for a, b in zip(gradients, expected, strict=True))
    finally:
        monkeypatch.undo()
        hand_written_attention_works.cache_clear()


def test_a_state_of_per_image_grids_steps_and_selects_as_the_expanded_state():
    decoder = random_decoder()
    per_image = decoder.init_state(torch.randn(3, 9, 16))
    image_rows = torch.tensor([2, 0, 0, 1, 2])
    expanded = per_image.select(image_rows)
    compact = DecoderState(per_image.memory, per_image.keys, expanded.hidden, expanded.cell, image_rows)
    reorder = torch.tensor([4, 1, 1, 0])
    tokens = torch.tensor([START, 5, 6, START])
    expected_log_probs, expected_state, expected_weights = decoder.step(expanded.select(reorder), tokens)
    log_probs, state, weights = decoder.step(compact.select(reorder), tokens)
    assert torch.equal(state.image_rows, torch.tensor([2, 0, 0, 2])) and state.memory.shape[0] == 3
    assert torch.allclose(log_probs, expected_log_probs) and torch.allclose(weights, expected_weights)
    assert torch.allclose(state.hidden, expected_state.hidden) and torch.allclose(state.cell, expected_state.cell)


def test_attention_backward_cannot_run_twice_on_one_graph():
    # the backward reuses buffers it saved, so a second pass over the same graph must fail loudly, not give wrong gradients
    decoder = random_decoder()
    state = decoder.init_state(torch.randn(2, 9, 16))
    log_probs, _, _ = decoder.step(state, torch.tensor([START, START]))
    log_probs.sum().backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        log_probs.sum().backward()


def test_build_decoder_builds_each_type_and_refuses_unknown_ones():
    assert isinstance(build_decoder(ModelConfig(embed_dim=8, feature_dim=8, attention_dim=8, hidden_dim=8),
                                    vocab_size=9, encoder_channels=4), AttentionLSTMDecoder)
    transformer = build_decoder(ModelConfig(type="transformer", embed_dim=16, layers=2, encoder_layers=0, heads=2, ff_dim=24),
                                vocab_size=9, encoder_channels=4)
    assert isinstance(transformer, TransformerDecoder)
    assert len(transformer.blocks) == 2 and len(transformer.grid_blocks) == 0
    with pytest.raises(CaptionerError, match="unknown model.type 'gru'; available: lstm-attention, transformer"):
        build_decoder(ModelConfig(type="gru"), vocab_size=9, encoder_channels=4)


def test_transformer_scores_only_real_tokens_and_trains_every_weight():
    decoder = random_transformer().train()
    captions = torch.tensor([[START, 5, 7, END], [START, 6, END, 0], [START, END, 0, 0]])
    output = decoder(torch.randn(2, 9, 16), captions, torch.tensor([4, 3, 2]), torch.tensor([0, 1, 1]))
    assert output.rows.tolist() == [0, 0, 0, 1, 1, 2]
    assert output.targets.tolist() == [5, 7, END, 6, END, END]
    assert output.attention_sums is None  # no doubly stochastic penalty for multi-head attention
    output.logits.log_softmax(dim=-1).gather(1, output.targets.unsqueeze(1)).sum().backward()
    assert all(parameter.grad is not None and parameter.grad.abs().sum() > 0 for parameter in decoder.parameters())


def test_transformer_state_caches_one_step_per_token_and_attention_sums_to_one():
    decoder = random_transformer()
    state = decoder.init_state(torch.randn(3, 9, 16))
    assert isinstance(state, TransformerState)
    assert state.grid_keys.shape == (2, 3, 4, 9, 4) and state.past_keys.shape == (2, 3, 4, 0, 4)
    for step in range(1, 4):
        log_probs, state, weights = decoder.step(state, torch.full((3,), START))
        assert state.past_keys.shape == state.past_values.shape == (2, 3, 4, step, 4)
    torch.testing.assert_close(log_probs.exp().sum(dim=1), torch.ones(3))
    assert weights.shape == (3, 9) and bool((weights >= 0).all())
    torch.testing.assert_close(weights.sum(dim=1), torch.ones(3))
    assert state.select(torch.tensor([2, 2])).past_keys.shape[1] == 2


def test_transformer_beam_search_on_a_batch_equals_one_image_at_a_time():
    decoder = random_transformer(seed=3)
    grid = torch.randn(3, 9, 16) * 3
    together = beam_search(decoder, grid, start_id=START, end_id=END, beam_size=3, n_best=2, max_length=6)
    for image in range(3):
        [alone] = beam_search(decoder, grid[image : image + 1], start_id=START, end_id=END, beam_size=3, n_best=2, max_length=6)
        assert [h.token_ids for h in alone] == [h.token_ids for h in together[image]]
        assert [h.score for h in alone] == pytest.approx([h.score for h in together[image]], abs=1e-5)
    greedy = greedy_decode(decoder, grid, start_id=START, end_id=END, max_length=6)
    for one, [other] in zip(greedy, beam_search(decoder, grid, start_id=START, end_id=END, beam_size=1, max_length=6), strict=True):
        assert one.token_ids == other.token_ids


# ---- greedy and beam search on the trained tiny decoder ----

def test_greedy_and_beam_size_one_agree(trained):
    run, _, grid = trained
    greedy = greedy_decode(run.decoder, grid, start_id=START, end_id=END, max_length=12)
    beam = beam_search(run.decoder, grid, start_id=START, end_id=END, beam_size=1, max_length=12)
    assert len(greedy) == len(beam) == grid.shape[0]
    for one, [other] in zip(greedy, beam, strict=True):
        assert one.finished and other.finished  # the tiny model ends its captions
        assert one.token_ids == other.token_ids
        assert one.log_probability == pytest.approx(other.log_probability, abs=1e-4)
        torch.testing.assert_close(one.attention, other.attention)


@pytest.mark.parametrize("max_length", [1, 3])
def test_greedy_and_beam_size_one_agree_when_cut_at_max_length(trained, max_length):
    run, _, grid = trained
    greedy = greedy_decode(run.decoder, grid, start_id=START, end_id=END, max_length=max_length)
    beam = beam_search(run.decoder, grid, start_id=START, end_id=END, beam_size=1, max_length=max_length)
    for one, [other] in zip(greedy, beam, strict=True):
        assert len(one.token_ids) == max_length and not one.finished
        assert one.token_ids == other.token_ids
        assert one.finished == other.finished
        assert one.log_probability == pytest.approx(other.log_probability, abs=1e-4)
        assert one.attention.shape == other.attention.shape == (max_length, grid.shape[1])


def test_beam_search_on_a_batch_equals_one_image_at_a_time(trained):
    run, _, grid = trained
    options = dict(start_id=START, end_id=END, beam_size=3, n_best=3, max_length=12)
    batched = beam_search(run.decoder, grid, **options)
    for image in range(grid.shape[0]):
        [alone] = beam_search(run.decoder, grid[image : image + 1], **options)
        assert [h.token_ids for h in batched[image]] == [h.token_ids for h in alone]
        assert [h.score for h in batched[image]] == pytest.approx([h.score for h in alone], abs=1e-4)
        assert [h.finished for h in batched[image]] == [h.finished for h in alone]


def test_n_best_is_sorted_distinct_and_at_most_beam_size(trained):
    run, _, grid = trained
    results = beam_search(run.decoder, grid, start_id=START, end_id=END, beam_size=4, n_best=4, max_length=12)
    for hypotheses in results:
        assert len(hypotheses) == 4
        scores = [h.score for h in hypotheses]
        assert scores == sorted(scores, reverse=True)
        assert len({tuple(h.token_ids) for h in hypotheses}) == 4
        for hypothesis in hypotheses:
            assert hypothesis.log_probability <= 0
            assert START not in hypothesis.token_ids and END not in hypothesis.token_ids
            steps = len(hypothesis.token_ids) + (1 if hypothesis.finished else 0)
            assert hypothesis.attention.shape == (steps, grid.shape[1])
            torch.testing.assert_close(hypothesis.attention.sum(dim=1), torch.ones(steps))
    capped = beam_search(run.decoder, grid[:1], start_id=START, end_id=END, beam_size=2, n_best=5)
    assert len(capped[0]) == 2  # n_best is capped at beam_size


def test_beam_search_finds_more_likely_captions_than_greedy(trained):
    run, _, grid = trained
    greedy = greedy_decode(run.decoder, grid, start_id=START, end_id=END, max_length=12)
    beam = beam_search(run.decoder, grid, start_id=START, end_id=END, beam_size=3, max_length=12)
    greedy_mean = sum(h.log_probability for h in greedy) / len(greedy)
    beam_mean = sum(best.log_probability for [best] in beam) / len(beam)
    assert beam_mean >= greedy_mean - 1e-5


def test_beam_search_refuses_bad_sizes(trained):
    run, _, grid = trained
    with pytest.raises(ValueError, match="beam_size and n_best must be >= 1"):
        beam_search(run.decoder, grid, start_id=START, end_id=END, beam_size=0)


# ---- a model that never emits <end> ----

def test_greedy_without_end_returns_max_length_words_unfinished(trained):
    run, _, grid = trained
    results = greedy_decode(without_end(run.decoder), grid, start_id=START, end_id=END, max_length=5)
    for hypothesis in results:
        assert len(hypothesis.token_ids) == 5
        assert not hypothesis.finished
        assert math.isfinite(hypothesis.log_probability)
        assert hypothesis.attention.shape == (5, grid.shape[1])


@pytest.mark.parametrize("beam_size", [1, 3])
def test_beam_search_without_end_returns_max_length_words_unfinished(trained, beam_size):
    run, _, grid = trained
    results = beam_search(without_end(run.decoder), grid, start_id=START, end_id=END, beam_size=beam_size,
                          n_best=beam_size, max_length=5)
    for hypotheses in results:
        assert len(hypotheses) == beam_size
        for hypothesis in hypotheses:
            assert len(hypothesis.token_ids) == 5
            assert not hypothesis.finished
            assert math.isfinite(hypothesis.score)
            assert END not in hypothesis.token_ids
            assert hypothesis.attention.shape == (5, grid.shape[1])
        assert [h.score for h in hypotheses] == sorted((h.score for h in hypotheses), reverse=True)


# ---- ensembles ----

def test_ensemble_step_averages_the_members_log_probabilities():
    lstm, transformer = random_decoder(seed=1), random_transformer(seed=2)
    ensemble = EnsembleDecoder([lstm, transformer])
    grid, tokens = torch.randn(3, 9, 16), torch.tensor([START, 5, 6])
    with torch.no_grad():
        log_probs, state, weights = ensemble.step(ensemble.init_state(grid), tokens)
        expected_lstm, _, weights_lstm = lstm.step(lstm.init_state(grid), tokens)
        expected_transformer, _, weights_transformer = transformer.step(transformer.init_state(grid), tokens)
    torch.testing.assert_close(log_probs, ((expected_lstm + expected_transformer) / 2).log_softmax(dim=-1))
    torch.testing.assert_close(log_probs.exp().sum(dim=1), torch.ones(3))
    torch.testing.assert_close(weights, (weights_lstm + weights_transformer) / 2)
    assert len(state.select(torch.tensor([0, 0])).states) == 2


def test_ensemble_beam_search_batches_and_a_one_member_ensemble_is_its_member():
    lstm, transformer = random_decoder(seed=4), random_transformer(seed=5)
    grid = torch.randn(2, 9, 16) * 3
    options = dict(start_id=START, end_id=END, beam_size=3, n_best=2, max_length=6)
    alone = beam_search(lstm, grid, **options)
    assert [[h.token_ids for h in image] for image in beam_search(EnsembleDecoder([lstm]), grid, **options)] == \
        [[h.token_ids for h in image] for image in alone]
    ensemble = EnsembleDecoder([lstm, transformer])
    together = beam_search(ensemble, grid, **options)
    for image in range(2):
        [one] = [beam_search(ensemble, grid[image : image + 1], **options)[0]]
        assert [h.token_ids for h in one] == [h.token_ids for h in together[image]]
    with pytest.raises(ValueError, match="different vocabulary sizes"):
        EnsembleDecoder([lstm, random_transformer(vocab_size=12)])


def mirrored_grid(grid: torch.Tensor) -> torch.Tensor:
    """(images, side * side, channels) row-major grid -> the grid of the left-right mirrored photo."""
    side = math.isqrt(grid.shape[1])
    return grid.view(grid.shape[0], side, side, -1).flip(2).reshape(grid.shape)


def test_flip_ensemble_averages_the_two_views_and_maps_attention_back_onto_the_photo():
    lstm = random_decoder(seed=6)
    flips = FlipEnsembleDecoder(lstm)
    photo, mirrored, tokens = torch.randn(2, 9, 16), torch.randn(2, 9, 16), torch.tensor([START, 7])
    with torch.no_grad():
        log_probs, _, weights = flips.step(flips.init_state(torch.cat([photo, mirrored], dim=-1)), tokens)
        photo_log_probs, _, photo_weights = lstm.step(lstm.init_state(photo), tokens)
        mirrored_log_probs, _, mirrored_weights = lstm.step(lstm.init_state(mirrored), tokens)
    torch.testing.assert_close(log_probs, ((photo_log_probs + mirrored_log_probs) / 2).log_softmax(dim=-1))
    # pixel (row r, column c) of the mirrored view is pixel (r, 2 - c) of the photo
    back = mirrored_weights.view(2, 3, 3)[:, :, [2, 1, 0]].reshape(2, 9)
    torch.testing.assert_close(weights, (photo_weights + back) / 2)


def test_flip_ensemble_of_an_exact_mirror_decodes_as_the_photo_alone():
    # the LSTM's attention has no notion of position, so the exactly mirrored grid gives the same words, and its
    # attention, mapped back, lands on the same pixels
    lstm, grid = random_decoder(seed=7), torch.randn(2, 16, 16) * 3
    options = dict(start_id=START, end_id=END, beam_size=3, n_best=2, max_length=6)
    alone = beam_search(lstm, grid, **options)
    flipped = beam_search(FlipEnsembleDecoder(lstm), torch.cat([grid, mirrored_grid(grid)], dim=-1), **options)
    for single, pair in zip(alone, flipped, strict=True):
        assert [h.token_ids for h in pair] == [h.token_ids for h in single]
        for a, b in zip(single, pair, strict=True):
            assert b.log_probability == pytest.approx(a.log_probability, abs=1e-4)
            torch.testing.assert_close(b.attention, a.attention)
    # with an ensemble inside, each member reads both views
    ensemble = FlipEnsembleDecoder(EnsembleDecoder([lstm, random_transformer(seed=8)]))
    assert len(beam_search(ensemble, torch.cat([grid, grid], dim=-1), **options)) == 2


# ---- a decoder with a known answer: the length penalty ----

class BigramDecoder:
    """Next-word probabilities that depend only on the previous word, so every caption's score is known."""

    def __init__(self, table: dict[int, dict[int, float]], vocab_size: int):
        logits = torch.full((vocab_size, vocab_size), math.log(1e-6))
        for previous, following in table.items():
            for word, probability in following.items():
                logits[previous, word] = math.log(probability)
        self.log_probs = logits.log_softmax(dim=1)

    def init_state(self, grid: torch.Tensor) -> DecoderState:
        rows = torch.zeros((grid.shape[0], 1))
        return DecoderState(grid, grid, rows, rows)

    def step(self, state: DecoderState, previous_tokens: torch.Tensor):
        pixels = state.memory.shape[1]
        weights = torch.full((previous_tokens.shape[0], pixels), 1.0 / pixels)
        return self.log_probs[previous_tokens], state, weights


A, B, C, D, E = 3, 4, 5, 6, 7
# "a": 0.6 * 0.62 -> log -0.99, 2 tokens with <end>; "b c d": 0.4 * 0.82**3 -> log -1.51, 4 tokens;
# "a e": 0.6 * 0.38 * 0.9 -> log -1.58, 3 tokens
KNOWN = {START: {A: 0.6, B: 0.4}, A: {END: 0.62, E: 0.38}, E: {END: 0.9, A: 0.1}, B: {C: 0.82, END: 0.18},
         C: {D: 0.82, END: 0.18}, D: {END: 0.82, A: 0.18}}


def test_known_scores_without_length_penalty():
    decoder = BigramDecoder(KNOWN, vocab_size=8)
    [ranked] = beam_search(decoder, torch.zeros(1, 4, 2), start_id=START, end_id=END, beam_size=3, n_best=3, max_length=10)
    assert [h.token_ids for h in ranked] == [[A], [B, C, D], [A, E]]
    assert [h.log_probability for h in ranked] == pytest.approx(
        [math.log(0.6 * 0.62), math.log(0.4 * 0.82**3), math.log(0.6 * 0.38 * 0.9)], abs=1e-4)
    assert [h.score for h in ranked] == [h.log_probability for h in ranked]
    assert all(h.finished for h in ranked)


def test_length_penalty_favours_longer_captions():
    decoder = BigramDecoder(KNOWN, vocab_size=8)
    [ranked] = beam_search(decoder, torch.zeros(1, 4, 2), start_id=START, end_id=END, beam_size=3, n_best=3,
                           max_length=10, length_penalty=1.0)
    assert [h.token_ids for h in ranked] == [[B, C, D], [A], [A, E]]
    for hypothesis in ranked:  # score = log-probability / tokens (with <end>) ** alpha
        assert hypothesis.score == pytest.approx(hypothesis.log_probability / (len(hypothesis.token_ids) + 1))
    greedy = greedy_decode(decoder, torch.zeros(1, 4, 2), start_id=START, end_id=END, max_length=10)
    assert greedy[0].token_ids == [A]  # greedy has no length penalty to change its mind


# ---- tokens a caption must never contain ----

def test_suppressed_tokens_are_never_emitted():
    UNK = 3
    # the model's favourite first word is <unk>, then <start>; suppressed, the next best caption is "b"
    table = {START: {UNK: 0.5, START: 0.3, B: 0.2}, B: {END: 0.9, UNK: 0.1}}
    decoder = BigramDecoder(table, vocab_size=8)
    grid = torch.zeros(2, 4, 2)
    [plain] = greedy_decode(decoder, grid[:1], start_id=START, end_id=END, max_length=3)
    assert UNK in plain.token_ids
    suppress = (0, START, UNK)
    for hypothesis in greedy_decode(decoder, grid, start_id=START, end_id=END, max_length=3, suppress_ids=suppress):
        assert hypothesis.token_ids == [B] and hypothesis.finished
        assert hypothesis.log_probability == pytest.approx(math.log(0.2 * 0.9), abs=1e-4)
    for hypotheses in beam_search(decoder, grid, start_id=START, end_id=END, beam_size=3, n_best=3, max_length=3,
                                  suppress_ids=suppress):
        assert hypotheses[0].token_ids == [B]
        assert all(not set(h.token_ids) & set(suppress) for h in hypotheses)


def test_trained_decoder_that_loves_unk_still_emits_words(trained):
    run, _, grid = trained
    decoder = copy.deepcopy(run.decoder)
    vocabulary = run.vocabulary
    with torch.no_grad():
        decoder.output.bias[vocabulary.unk_id] += 50.0
    suppress = vocabulary.never_emitted_ids
    assert set(suppress) == {vocabulary.pad_id, vocabulary.start_id, vocabulary.unk_id}
    [[spoiled]] = beam_search(decoder, grid[:1], start_id=START, end_id=END, beam_size=2, max_length=5)
    assert vocabulary.unk_id in spoiled.token_ids  # without suppression the caption is all <unk>
    for hypotheses in beam_search(decoder, grid, start_id=START, end_id=END, beam_size=2, max_length=12, suppress_ids=suppress):
        assert hypotheses[0].token_ids and not set(hypotheses[0].token_ids) & set(suppress)


# ---- sampling and the self-critical loss ----

def test_samples_follow_the_model_distribution_image_by_image():
    decoder = BigramDecoder(KNOWN, vocab_size=8)
    torch.manual_seed(0)
    drawn = sample_captions(decoder, torch.zeros(2, 4, 2), samples=3000, start_id=START, end_id=END, max_length=10).captions
    assert len(drawn) == 6000
    first_words = [words[0] for words, _ in drawn]
    assert first_words.count(A) / len(drawn) == pytest.approx(0.6, abs=0.03)
    assert all(finished and words[-1] in (A, E, B, C, D) for words, finished in drawn)
    assert drawn.count(([A], True)) / len(drawn) == pytest.approx(0.6 * 0.62, abs=0.03)


class CountdownDecoder:
    """Image i's one possible caption: the word grid[i, 0, 1] repeated grid[i, 0, 0] times, then <end>."""

    def init_state(self, grid: torch.Tensor) -> DecoderState:
        steps = torch.zeros((grid.shape[0], 1))
        return DecoderState(grid, grid, steps, steps)

    def step(self, state: DecoderState, previous_tokens: torch.Tensor):
        length, word = state.memory[:, 0, 0], state.memory[:, 0, 1].long()
        next_token = torch.where(state.hidden[:, 0] < length, word, torch.full_like(word, END))
        log_probs = torch.full((len(previous_tokens), 8), -1e9).scatter(1, next_token.unsqueeze(1), 0.0)
        steps = state.hidden + 1
        return log_probs, DecoderState(state.memory, state.keys, steps, steps), torch.ones(len(previous_tokens), 1)


def test_samples_stay_with_their_image_when_finished_rows_leave_the_batch():
    lengths, words = [5, 1, 3, 0, 2, 1], [3, 4, 5, 6, 7, 3]
    grid = torch.zeros(6, 1, 2)
    grid[:, 0, 0], grid[:, 0, 1] = torch.tensor(lengths, dtype=torch.float), torch.tensor(words, dtype=torch.float)
    drawn = sample_captions(CountdownDecoder(), grid, samples=3, start_id=START, end_id=END, max_length=10).captions
    assert drawn == [([word] * length, True) for length, word in zip(lengths, words, strict=True) for _ in range(3)]


def test_samples_are_cut_at_max_length_and_never_hold_suppressed_tokens():
    UNK = 3
    table = {START: {UNK: 0.5, B: 0.5}, B: {B: 0.99, END: 0.01}, UNK: {END: 1.0}}
    torch.manual_seed(0)
    drawn = sample_captions(BigramDecoder(table, vocab_size=8), torch.zeros(4, 4, 2), samples=5, start_id=START, end_id=END,
                            max_length=4, suppress_ids=(0, START, UNK)).captions
    assert all(UNK not in words and START not in words for words, _ in drawn)
    assert all(len(words) <= 4 for words, _ in drawn)
    assert (([B] * 4, False) in drawn)
    with pytest.raises(ValueError, match="samples must be >= 1"):
        sample_captions(BigramDecoder(table, vocab_size=8), torch.zeros(1, 4, 2), samples=0, start_id=START, end_id=END)


@pytest.mark.parametrize("kind", RANDOM_DECODERS)
def test_sampled_log_probabilities_are_the_teacher_forced_ones_of_the_suppressed_policy(kind):
    """Self-critical training differentiates either the log-probabilities sampling returns (LSTM) or those of a
    second, teacher-forced pass (Transformer): both must be the policy's, without the suppressed tokens, and
    cut where the caption is cut."""
    vocabulary = Vocabulary(["<pad>", "<start>", "<end>", "<unk>", *"abcdefg"])
    decoder = RANDOM_DECODERS[kind]()
    torch.manual_seed(1)
    grid = torch.randn(3, 9, 16) * 3
    drawn = sample_captions(decoder, grid, samples=8, start_id=vocabulary.start_id, end_id=vocabulary.end_id, max_length=3,
                            suppress_ids=vocabulary.never_emitted_ids)
    finished = [done for _, done in drawn.captions]
    assert any(finished) and not all(finished)  # both the <end> and the max_length cut are exercised
    assert drawn.log_probabilities.requires_grad
    forced = teacher_forced_log_probabilities(decoder, grid, drawn.captions, torch.arange(3).repeat_interleave(8), vocabulary)
    torch.testing.assert_close(drawn.log_probabilities, forced)
    assert drawn.tokens == sum(len(words) + done for words, done in drawn.captions)


@pytest.mark.parametrize("weights", [{}, {"bleu_weight": 1.0, "meteor_weight": 2.0}])
@pytest.mark.parametrize("kind", RANDOM_DECODERS)
def test_self_critical_steps_raise_the_reward(kind, weights):
    vocabulary = Vocabulary(["<pad>", "<start>", "<end>", "<unk>", *"abcdefg"])
    # each image has one right caption; the reward is CIDEr-D against it (plus weighted BLEU-4 and METEOR-like terms)
    references = {"one": [[4, 5, 6]] * 5, "two": [[7, 8]] * 5, "three": [[9, 10, 4]] * 5}
    reward = SelfCriticalReward(references, **weights)
    config = Config()
    config.train.scst_samples, config.train.scst_max_length = 8, 6
    decoder = RANDOM_DECODERS[kind]()
    torch.manual_seed(0)
    grid = torch.randn(3, 9, 16) * 3
    optimizer = torch.optim.Adam(decoder.parameters(), lr=0.03)
    rewards = []
    for _ in range(50):
        loss, mean_reward = self_critical_loss(decoder, grid, list(references), reward, vocabulary, config)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        rewards.append(mean_reward)
    assert sum(rewards[-10:]) > 2 * sum(rewards[:10])  # a flipped sign would make it fall
    assert not decoder.training  # sampled and scored without dropout
