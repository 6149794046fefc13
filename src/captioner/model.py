"""Caption decoders over an encoder grid, both behind one interface (`init_state`, `step`, `forward`).

`lstm-attention`: the soft-attention LSTM of Xu et al. 2015, "Show, Attend and Tell": attention MLP
over the grid, a gating scalar on the context, h/c initialised from the mean feature, a deep output
layer (Xu eq. 7) and doubly stochastic attention regularisation.
`transformer`: a pre-norm Transformer decoder (Vaswani et al. 2017) cross-attending to the grid,
trained in parallel over time steps and decoded incrementally with cached keys and values.
Either way the grid is projected and its attention keys computed once per image, not once per caption.
"""
from __future__ import annotations

import functools
import logging
import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

log = logging.getLogger(__name__)


@dataclass
class DecoderState:
    """Everything one decoding step needs; rows are (image x beam) or captions."""

    memory: torch.Tensor  # (rows, pixels, feature_dim) projected grid; (images, pixels, feature_dim) with `image_rows`
    keys: torch.Tensor  # (rows, pixels, attention_dim) attention keys of the grid; per image with `image_rows`
    hidden: torch.Tensor  # (rows, hidden_dim)
    cell: torch.Tensor  # (rows, hidden_dim)
    # which image each row attends to, when `memory` and `keys` hold one row per image (teacher forcing)
    image_rows: torch.Tensor | None = None

    def select(self, index: torch.Tensor) -> DecoderState:
        """Rows in the order of `index` (beam reordering, expanding images to captions)."""
        if self.image_rows is not None:
            return DecoderState(self.memory, self.keys, self.hidden.index_select(0, index), self.cell.index_select(0, index),
                                self.image_rows.index_select(0, index))
        # index_select, not tensor indexing: its backward is an index_add, far cheaper than indexing's index_put
        return DecoderState(*(tensor.index_select(0, index) for tensor in (self.memory, self.keys, self.hidden, self.cell)))


class AdditiveAttention(torch.autograd.Function):
    """Soft attention over the grid (Xu eq. 4-6): softmax_p(w . tanh(keys_p + query) + b), and the weighted sum of the
    grid, with a hand-written backward that gives autograd's gradients of `reference` bit for bit, faster: autograd
    computes two of the backward's products as matrix products with an inner size of 1, slow on a CPU, where this
    uses broadcast products (exact all the same: one rounding each); the tanh is taken in place and its buffers are
    reused for gradients. With `image_rows`, the grid's rows are gathered per step from the per-image tensors by a
    flat copy, several times faster than a gather over the (pixels, channels) grid. `benchmarks/bench_training.py
    --compare-attention` times the two.
    """

    @staticmethod
    def reference(memory: torch.Tensor, keys: torch.Tensor, image_rows: torch.Tensor | None, query: torch.Tensor,
                  score_weight: torch.Tensor, score_bias: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The same attention as plain tensor ops, left to autograd: what `apply` must equal."""
        if image_rows is not None:
            memory, keys = memory.index_select(0, image_rows), keys.index_select(0, image_rows)
        scores = F.linear(torch.tanh(keys + query.unsqueeze(1)), score_weight, score_bias).squeeze(2)  # (rows, pixels)
        weights = scores.softmax(dim=1)
        return torch.bmm(weights.unsqueeze(1), memory).squeeze(1), weights  # (rows, feature_dim), (rows, pixels)

    @staticmethod
    def forward(ctx, memory: torch.Tensor, keys: torch.Tensor, image_rows: torch.Tensor | None, query: torch.Tensor,
                score_weight: torch.Tensor, score_bias: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        ctx.set_materialize_grads(False)
        rows = query.shape[0]
        if image_rows is None:
            activated = keys + query.unsqueeze(1)  # (rows, pixels, attention_dim)
            row_memory = memory
        else:
            activated = keys.flatten(1).index_select(0, image_rows).view(rows, *keys.shape[1:]).add_(query.unsqueeze(1))
            row_memory = memory.flatten(1).index_select(0, image_rows).view(rows, *memory.shape[1:])  # (rows, pixels, feature_dim)
        activated.tanh_()
        weights = F.linear(activated, score_weight, score_bias).squeeze(2).softmax(dim=1)  # (rows, pixels)
        context = torch.bmm(weights.unsqueeze(1), row_memory).squeeze(1)  # (rows, feature_dim)
        ctx.save_for_backward(activated, weights, row_memory, image_rows, score_weight)
        ctx.images = memory.shape[0]  # the gradients' rows when the grid is per image
        return context, weights

    @staticmethod
    def backward(ctx, context_grad: torch.Tensor | None, weights_grad: torch.Tensor | None):
        activated, weights, row_memory, image_rows, score_weight = ctx.saved_tensors
        rows, pixels, attention_dim = activated.shape
        # each step below is the op autograd would run for the forward's plain ops, so the gradients are the same bits
        if context_grad is None:
            context_grad = torch.zeros_like(row_memory[:, 0])
        from_context = torch.bmm(context_grad.unsqueeze(1), row_memory.transpose(1, 2)).squeeze(1)  # (rows, pixels)
        # the gathered grid rows are this function's own copy, so their buffer can take their gradient
        row_memory_grad = torch.mul(weights.unsqueeze(2), context_grad.unsqueeze(1),
                                    out=row_memory if image_rows is not None else None)  # (rows, pixels, feature_dim)
        weights_grad = from_context if weights_grad is None else weights_grad + from_context
        scores_grad = torch._softmax_backward_data(weights_grad, weights, 1, weights.dtype).reshape(-1, 1)  # (rows*pixels, 1)
        score_weight_grad = scores_grad.t().mm(activated.reshape(-1, attention_dim))  # (1, attention_dim)
        score_bias_grad = scores_grad.sum(0)
        # elementwise, so it may overwrite the tanh values it reads (the last use of them)
        sum_grad = torch.ops.aten.tanh_backward.grad_input(scores_grad.view(rows, pixels, 1) * score_weight, activated,
                                                           grad_input=activated)  # (rows, pixels, attention_dim)
        query_grad = sum_grad.sum(1, keepdim=True).squeeze(1)  # (rows, attention_dim)
        if image_rows is None:
            return row_memory_grad, sum_grad, None, query_grad, score_weight_grad, score_bias_grad
        memory_grad, keys_grad = (grad.new_zeros(ctx.images, grad[0].numel()).index_add_(0, image_rows, grad.view(rows, -1))
                                  .view(ctx.images, *grad.shape[1:]) for grad in (row_memory_grad, sum_grad))
        return memory_grad, keys_grad, None, query_grad, score_weight_grad, score_bias_grad


@functools.cache
def hand_written_attention_works() -> bool:
    """Whether `AdditiveAttention`'s backward runs and matches autograd on this torch. It calls two private ops
    (`torch._softmax_backward_data`, `aten.tanh_backward`) that a future release may change; then training falls back
    to `AdditiveAttention.reference` (the same values, a few percent slower per step) instead of breaking."""
    generator = torch.Generator().manual_seed(0)
    inputs = [torch.randn(3, 4, 5, generator=generator), torch.randn(3, 4, 6, generator=generator),
              torch.randn(5, 6, generator=generator), torch.randn(1, 6, generator=generator), torch.randn(1, generator=generator)]
    image_rows = torch.tensor([0, 2, 1, 1, 0])
    gradients = []
    try:
        with torch.inference_mode(False), torch.enable_grad():
            for attend in (AdditiveAttention.apply, AdditiveAttention.reference):
                leaves = [tensor.clone().requires_grad_() for tensor in inputs]
                context, weights = attend(leaves[0], leaves[1], image_rows, *leaves[2:])
                (context.sum() + (weights * weights).sum()).backward()
                gradients.append([leaf.grad for leaf in leaves])
        if all(torch.allclose(fast, plain, rtol=1e-5, atol=1e-6) for fast, plain in zip(*gradients, strict=True)):
            return True
        problem = "its gradients differ from autograd's"
    except (AttributeError, RuntimeError, TypeError) as error:
        problem = f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
    log.warning("torch %s: the attention's hand-written backward does not work (%s); training uses autograd's "
                "(same results, a few percent slower)", torch.__version__, problem)
    return False


@dataclass
class TeacherForcedOutput:
    logits: torch.Tensor  # (valid tokens, vocab) packed in time-major order
    targets: torch.Tensor  # (valid tokens,) matching `logits`
    rows: torch.Tensor  # (valid tokens,) which caption each token belongs to
    attention_sums: torch.Tensor | None  # (captions, pixels) sum over time of the attention weights; None: no penalty


class AttentionLSTMDecoder(nn.Module):
    parallel_teacher_forcing = False  # forward() steps through time, as decoding does

    def __init__(
        self,
        *,
        vocab_size: int,
        encoder_channels: int,
        embed_dim: int = 512,
        feature_dim: int = 512,
        attention_dim: int = 512,
        hidden_dim: int = 512,
        dropout: float = 0.5,
    ):
        super().__init__()
        self.vocab_size = vocab_size
        self.feature_norm = nn.LayerNorm(encoder_channels)
        self.feature_projection = nn.Linear(encoder_channels, feature_dim)
        self.attention_keys = nn.Linear(feature_dim, attention_dim)
        self.attention_query = nn.Linear(hidden_dim, attention_dim)
        self.attention_score = nn.Linear(attention_dim, 1)
        self.gate = nn.Linear(hidden_dim, feature_dim)
        self.init_hidden = nn.Linear(feature_dim, hidden_dim)
        self.init_cell = nn.Linear(feature_dim, hidden_dim)
        self.embedding = nn.Embedding(vocab_size, embed_dim)
        # the LSTM cell, split so the embedding's share of the gates is computed for all steps at once
        self.gates_from_embedding = nn.Linear(embed_dim, 4 * hidden_dim)
        self.gates_from_context = nn.Linear(feature_dim, 4 * hidden_dim, bias=False)
        self.gates_from_hidden = nn.Linear(hidden_dim, 4 * hidden_dim, bias=False)
        # deep output: logits = L_o(E y_prev + L_h h + L_z z)
        self.output_hidden = nn.Linear(hidden_dim, embed_dim)
        self.output_context = nn.Linear(feature_dim, embed_dim, bias=False)
        self.output = nn.Linear(embed_dim, vocab_size)
        self.dropout = nn.Dropout(dropout)

    def init_state(self, grid: torch.Tensor) -> DecoderState:
        """(images, pixels, channels) encoder grid -> initial state, one row per image."""
        memory = F.relu(self.feature_projection(self.feature_norm(grid.float())))  # (images, pixels, feature_dim)
        keys = self.attention_keys(memory)  # (images, pixels, attention_dim)
        mean = memory.mean(dim=1)  # (images, feature_dim)
        return DecoderState(memory, keys, torch.tanh(self.init_hidden(mean)), torch.tanh(self.init_cell(mean)))

    def _attend(self, state: DecoderState) -> tuple[torch.Tensor, torch.Tensor]:
        query = self.attention_query(state.hidden)  # (rows, attention_dim)
        # the forward is public ops alone: only a step that will need gradients depends on the private ones
        fast = not torch.is_grad_enabled() or hand_written_attention_works()
        attend = AdditiveAttention.apply if fast else AdditiveAttention.reference
        context, weights = attend(state.memory, state.keys, state.image_rows, query,
                                  self.attention_score.weight, self.attention_score.bias)
        return context * torch.sigmoid(self.gate(state.hidden)), weights  # (rows, feature_dim), (rows, pixels)

    def _cell(self, state: DecoderState, embedding_gates: torch.Tensor) -> tuple[DecoderState, torch.Tensor, torch.Tensor]:
        context, weights = self._attend(state)
        gates = embedding_gates + self.gates_from_context(context) + self.gates_from_hidden(state.hidden)
        input_gate, forget_gate, cell_gate, output_gate = gates.chunk(4, dim=1)  # each (rows, hidden_dim)
        cell = torch.sigmoid(forget_gate) * state.cell + torch.sigmoid(input_gate) * torch.tanh(cell_gate)
        hidden = torch.sigmoid(output_gate) * torch.tanh(cell)
        return DecoderState(state.memory, state.keys, hidden, cell, state.image_rows), context, weights

    def _logits(self, embedded: torch.Tensor, hidden: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        deep = embedded + self.output_hidden(hidden) + self.output_context(context)  # (rows, embed_dim)
        return self.output(self.dropout(deep))  # (rows, vocab)

    def step(self, state: DecoderState, previous_tokens: torch.Tensor) -> tuple[torch.Tensor, DecoderState, torch.Tensor]:
        """One decoding step: (rows,) previous tokens -> (rows, vocab) log-probs, new state, (rows, pixels) attention."""
        embedded = self.embedding(previous_tokens)  # (rows, embed_dim)
        state, context, weights = self._cell(state, self.gates_from_embedding(embedded))
        return self._logits(embedded, state.hidden, context).log_softmax(dim=-1), state, weights

    def forward(self, grid: torch.Tensor, captions: torch.Tensor, lengths: torch.Tensor, image_index: torch.Tensor) -> TeacherForcedOutput:
        """Teacher forcing.

        grid: (images, pixels, channels); captions: (captions, max_len) ids with <start> ... <end> <pad>;
        lengths: (captions,) tokens including <start> and <end>, sorted descending;
        image_index: (captions,) which image each caption describes.
        """
        per_image = self.init_state(grid)
        hidden = per_image.hidden.index_select(0, image_index)  # (captions, hidden_dim)
        cell = per_image.cell.index_select(0, image_index)
        embedded = self.embedding(captions[:, :-1])  # (captions, steps, embed_dim)
        embedding_gates = self.gates_from_embedding(embedded)  # (captions, steps, 4 * hidden_dim)
        # split by step once: the backward of a per-step slice of the whole tensor would zero-fill and add a
        # whole-tensor gradient every step; unbind's backward stacks the per-step gradients once
        embedded_per_step, gates_per_step = embedded.unbind(1), embedding_gates.unbind(1)
        steps = int(lengths[0]) - 1
        # captions are sorted by length, so the first `active` rows are the ones still running
        active_per_step = (lengths.unsqueeze(0) > torch.arange(1, steps + 1).unsqueeze(1)).sum(dim=1).tolist()
        hiddens, contexts, embeddeds, targets, rows_per_step, weights_per_step = [], [], [], [], [], []
        for step, active in enumerate(active_per_step):
            # attention gathers the grid rows per step from the small per-image tensors: cheaper in the backward
            # pass than slicing caption-sized copies, whose gradients would be zero-filled every step
            state = DecoderState(per_image.memory, per_image.keys, hidden[:active], cell[:active], image_index[:active])
            state, context, weights = self._cell(state, gates_per_step[step][:active])
            hidden, cell = state.hidden, state.cell
            weights_per_step.append(F.pad(weights, (0, 0, 0, captions.shape[0] - active)))  # (captions, pixels)
            hiddens.append(hidden)
            contexts.append(context)
            embeddeds.append(embedded_per_step[step][:active])
            targets.append(captions[:active, step + 1])
            rows_per_step.append(torch.arange(active))
        attention_sums = torch.stack(weights_per_step).sum(dim=0)  # (captions, pixels)
        logits = self._logits(torch.cat(embeddeds), torch.cat(hiddens), torch.cat(contexts))  # (tokens, vocab)
        return TeacherForcedOutput(logits, torch.cat(targets), torch.cat(rows_per_step), attention_sums)


def sinusoids(positions: int, dim: int) -> torch.Tensor:
    """(positions, dim) sine/cosine position codes of Vaswani et al."""
    frequencies = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))  # (dim/2,)
    angles = torch.arange(positions, dtype=torch.float32).unsqueeze(1) * frequencies  # (positions, dim/2)
    return torch.stack([angles.sin(), angles.cos()], dim=2).flatten(1)  # (positions, dim)


def grid_sinusoids(pixels: int, dim: int) -> torch.Tensor:
    """(pixels, dim) 2-D position codes for a square row-major grid: half the channels code the row, half the column."""
    side = math.isqrt(pixels)
    if side * side != pixels:
        raise ValueError(f"expected a square grid, got {pixels} pixels")
    codes = sinusoids(side, dim // 2)  # (side, dim/2)
    return torch.cat([codes.repeat_interleave(side, dim=0), codes.repeat(side, 1)], dim=1)  # (pixels, dim)


class MultiHeadAttention(nn.Module):
    """Attention whose keys/values are projected separately, so the grid's are computed once per image."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        if dim % heads:
            raise ValueError(f"width {dim} is not divisible by {heads} heads")
        self.heads = heads
        self.query = nn.Linear(dim, dim)
        self.key_value = nn.Linear(dim, 2 * dim)
        self.out = nn.Linear(dim, dim)

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        return x.unflatten(-1, (self.heads, -1)).transpose(1, 2)  # (rows, length, dim) -> (rows, heads, length, head_dim)

    def keys_values(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        keys, values = self.key_value(x).chunk(2, dim=-1)
        return self._split(keys), self._split(values)  # each (rows, heads, length, head_dim)

    def forward(self, x: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, *, causal: bool = False,
                need_weights: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        query = self._split(self.query(x))  # (rows, heads, queries, head_dim)
        weights = None
        if need_weights:  # decoding: the attention map is part of the output
            scores = query @ keys.transpose(2, 3) / math.sqrt(query.shape[-1])  # (rows, heads, queries, keys)
            if causal:
                scores = scores.masked_fill(torch.ones(scores.shape[-2:], dtype=torch.bool).triu(1), float("-inf"))
            probabilities = scores.softmax(dim=-1)
            mixed = probabilities @ values
            weights = probabilities.mean(dim=1)  # (rows, queries, keys) averaged over heads
        else:
            # no dropout on the attention weights: on a CPU drawing those masks costs more than it helps
            mixed = F.scaled_dot_product_attention(query, keys, values, is_causal=causal)
        return self.out(mixed.transpose(1, 2).flatten(2)), weights  # (rows, queries, dim)


class TransformerBlock(nn.Module):
    """Pre-norm block: self-attention, cross-attention to the grid (decoder blocks only), feed-forward."""

    def __init__(self, dim: int, heads: int, ff_dim: int, dropout: float, *, cross: bool):
        super().__init__()
        self.self_norm = nn.LayerNorm(dim)
        self.self_attention = MultiHeadAttention(dim, heads)
        self.cross_norm = nn.LayerNorm(dim) if cross else None
        self.cross_attention = MultiHeadAttention(dim, heads) if cross else None
        self.ff_norm = nn.LayerNorm(dim)
        self.feed_forward = nn.Sequential(nn.Linear(dim, ff_dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(ff_dim, dim))
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, *, causal: bool, past: tuple[torch.Tensor, torch.Tensor] | None = None,
                grid_keys: torch.Tensor | None = None, grid_values: torch.Tensor | None = None, need_weights: bool = False):
        """x: (rows, length, dim). `past`: cached self-attention keys/values of earlier steps (decoding).

        Returns x, this step's self-attention keys/values (cache included), and the grid attention weights.
        """
        normed = self.self_norm(x)
        keys, values = self.self_attention.keys_values(normed)
        if past is not None:
            keys, values = torch.cat([past[0], keys], dim=2), torch.cat([past[1], values], dim=2)
        # with a cache the single new query may see every cached step, so no mask
        attended, _ = self.self_attention(normed, keys, values, causal=causal and past is None)
        x = x + self.dropout(attended)
        weights = None
        if self.cross_attention is not None:
            attended, weights = self.cross_attention(self.cross_norm(x), grid_keys, grid_values, need_weights=need_weights)
            x = x + self.dropout(attended)
        x = x + self.dropout(self.feed_forward(self.ff_norm(x)))
        return x, (keys, values), weights


@dataclass
class TransformerState:
    """Decoding state; rows are (image x beam). Tensors are (layers, rows, heads, length, head_dim): layers first,
    so each layer's slice is contiguous and attention does not copy the grid's keys every step."""

    grid_keys: torch.Tensor
    grid_values: torch.Tensor
    past_keys: torch.Tensor  # self-attention cache of the steps so far
    past_values: torch.Tensor

    def select(self, index: torch.Tensor) -> TransformerState:
        return TransformerState(self.grid_keys[:, index], self.grid_values[:, index], self.past_keys[:, index], self.past_values[:, index])


class TransformerDecoder(nn.Module):
    parallel_teacher_forcing = True  # forward() runs every time step at once

    def __init__(self, *, vocab_size: int, encoder_channels: int, dim: int = 512, layers: int = 3, encoder_layers: int = 1,
                 heads: int = 8, ff_dim: int = 2048, dropout: float = 0.1):
        super().__init__()
        self.vocab_size = vocab_size
        self.dim = dim
        self.feature_norm = nn.LayerNorm(encoder_channels)
        self.feature_projection = nn.Linear(encoder_channels, dim)
        self.grid_blocks = nn.ModuleList(TransformerBlock(dim, heads, ff_dim, dropout, cross=False) for _ in range(encoder_layers))
        self.grid_norm = nn.LayerNorm(dim)
        self.embedding = nn.Embedding(vocab_size, dim)
        self.blocks = nn.ModuleList(TransformerBlock(dim, heads, ff_dim, dropout, cross=True) for _ in range(layers))
        self.final_norm = nn.LayerNorm(dim)
        self.output = nn.Linear(dim, vocab_size)
        self.dropout = nn.Dropout(dropout)
        nn.init.normal_(self.embedding.weight, std=dim**-0.5)  # scaled by sqrt(dim) on input: unit variance, as the position codes

    def _encode(self, grid: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """(images, pixels, channels) -> per decoder layer, the grid's keys and values (images, heads, pixels, head_dim)."""
        memory = self.feature_projection(self.feature_norm(grid.float()))  # (images, pixels, dim)
        memory = self.dropout(memory + grid_sinusoids(memory.shape[1], self.dim))
        for block in self.grid_blocks:
            memory, _, _ = block(memory, causal=False)
        memory = self.grid_norm(memory)
        return [block.cross_attention.keys_values(memory) for block in self.blocks]

    def _embed(self, tokens: torch.Tensor, first_position: int) -> torch.Tensor:
        positions = sinusoids(first_position + tokens.shape[1], self.dim)[first_position:]  # (length, dim)
        return self.dropout(self.embedding(tokens) * math.sqrt(self.dim) + positions)  # (rows, length, dim)

    def _logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.output(self.final_norm(x))

    def init_state(self, grid: torch.Tensor) -> TransformerState:
        grid_kv = self._encode(grid)
        grid_keys = torch.stack([keys for keys, _ in grid_kv])  # (layers, images, heads, pixels, head_dim)
        grid_values = torch.stack([values for _, values in grid_kv])
        empty = grid_keys[:, :, :, :0]  # no steps yet
        return TransformerState(grid_keys, grid_values, empty, empty)

    def step(self, state: TransformerState, previous_tokens: torch.Tensor) -> tuple[torch.Tensor, TransformerState, torch.Tensor]:
        """One decoding step: (rows,) previous tokens -> (rows, vocab) log-probs, new state, (rows, pixels) attention."""
        x = self._embed(previous_tokens.unsqueeze(1), state.past_keys.shape[3])  # (rows, 1, dim)
        keys, values = [], []
        weights = None
        for layer, block in enumerate(self.blocks):
            x, (layer_keys, layer_values), weights = block(
                x, causal=True, past=(state.past_keys[layer], state.past_values[layer]),
                grid_keys=state.grid_keys[layer], grid_values=state.grid_values[layer], need_weights=layer == len(self.blocks) - 1)
            keys.append(layer_keys)
            values.append(layer_values)
        log_probs = self._logits(x.squeeze(1)).log_softmax(dim=-1)  # (rows, vocab)
        new_state = TransformerState(state.grid_keys, state.grid_values, torch.stack(keys), torch.stack(values))
        return log_probs, new_state, weights.squeeze(1)  # the last layer's grid attention, averaged over heads

    def forward(self, grid: torch.Tensor, captions: torch.Tensor, lengths: torch.Tensor, image_index: torch.Tensor,
                *, chunk_size: int = 32) -> TeacherForcedOutput:
        """Teacher forcing, all time steps at once; arguments as for AttentionLSTMDecoder.forward.

        Captions run in chunks of `chunk_size` of similar length, each cut to its own longest caption,
        so a batch's one long caption does not make every caption pay for its padding.
        """
        grid_kv = self._encode(grid)
        order = lengths.argsort(descending=True, stable=True)
        logits, targets, rows = [], [], []
        for start in range(0, len(order), chunk_size):
            chunk = order[start : start + chunk_size]
            steps = int(lengths[chunk].max()) - 1
            x = self._embed(captions[chunk, :steps], 0)  # (chunk, steps, dim)
            chunk_images = image_index[chunk]
            for block, (grid_keys, grid_values) in zip(self.blocks, grid_kv, strict=True):
                x, _, _ = block(x, causal=True, grid_keys=grid_keys.index_select(0, chunk_images),
                                grid_values=grid_values.index_select(0, chunk_images))
            chunk_targets = captions[chunk, 1 : steps + 1]  # (chunk, steps)
            chunk_rows, step_index = (chunk_targets != 0).nonzero(as_tuple=True)  # <pad> is id 0; only real tokens are scored
            logits.append(self._logits(x[chunk_rows, step_index]))
            targets.append(chunk_targets[chunk_rows, step_index])
            rows.append(chunk[chunk_rows])
        return TeacherForcedOutput(torch.cat(logits), torch.cat(targets), torch.cat(rows), None)


def build_decoder(model_config, *, vocab_size: int, encoder_channels: int) -> nn.Module:
    """The decoder a config names (`model.type`)."""
    from captioner.errors import CaptionerError

    if model_config.type == "transformer":
        return TransformerDecoder(vocab_size=vocab_size, encoder_channels=encoder_channels, dim=model_config.embed_dim,
                                  layers=model_config.layers, encoder_layers=model_config.encoder_layers,
                                  heads=model_config.heads, ff_dim=model_config.ff_dim, dropout=model_config.dropout)
    if model_config.type != "lstm-attention":
        raise CaptionerError(f"unknown model.type '{model_config.type}'; available: lstm-attention, transformer")
    return AttentionLSTMDecoder(
        vocab_size=vocab_size,
        encoder_channels=encoder_channels,
        embed_dim=model_config.embed_dim,
        feature_dim=model_config.feature_dim,
        attention_dim=model_config.attention_dim,
        hidden_dim=model_config.hidden_dim,
        dropout=model_config.dropout,
    )
