"""Soft-attention LSTM decoder after Xu et al. 2015, "Show, Attend and Tell".

Attention MLP over the encoder grid, a gating scalar on the context, h/c initialised from the
mean feature, a deep output layer (Xu eq. 7) and doubly stochastic attention regularisation.
The grid is projected and its attention keys computed once per image, not once per caption.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F


@dataclass
class DecoderState:
    """Everything one decoding step needs; rows are (image x beam) or captions."""

    memory: torch.Tensor  # (rows, pixels, feature_dim) projected grid
    keys: torch.Tensor  # (rows, pixels, attention_dim) attention keys of the grid
    hidden: torch.Tensor  # (rows, hidden_dim)
    cell: torch.Tensor  # (rows, hidden_dim)

    def select(self, index: torch.Tensor) -> "DecoderState":
        """Rows in the order of `index` (beam reordering, expanding images to captions)."""
        return DecoderState(self.memory[index], self.keys[index], self.hidden[index], self.cell[index])


@dataclass
class TeacherForcedOutput:
    logits: torch.Tensor  # (valid tokens, vocab) packed in time-major order
    targets: torch.Tensor  # (valid tokens,) matching `logits`
    attention_sums: torch.Tensor  # (captions, pixels) sum over time of the attention weights


class AttentionLSTMDecoder(nn.Module):
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
        query = self.attention_query(state.hidden).unsqueeze(1)  # (rows, 1, attention_dim)
        scores = self.attention_score(torch.tanh(state.keys + query)).squeeze(2)  # (rows, pixels)
        weights = scores.softmax(dim=1)  # (rows, pixels)
        context = torch.bmm(weights.unsqueeze(1), state.memory).squeeze(1)  # (rows, feature_dim)
        return context * torch.sigmoid(self.gate(state.hidden)), weights

    def _cell(self, state: DecoderState, embedding_gates: torch.Tensor) -> tuple[DecoderState, torch.Tensor, torch.Tensor]:
        context, weights = self._attend(state)
        gates = embedding_gates + self.gates_from_context(context) + self.gates_from_hidden(state.hidden)
        input_gate, forget_gate, cell_gate, output_gate = gates.chunk(4, dim=1)  # each (rows, hidden_dim)
        cell = torch.sigmoid(forget_gate) * state.cell + torch.sigmoid(input_gate) * torch.tanh(cell_gate)
        hidden = torch.sigmoid(output_gate) * torch.tanh(cell)
        return DecoderState(state.memory, state.keys, hidden, cell), context, weights

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
        steps = int(lengths[0]) - 1
        # captions are sorted by length, so the first `active` rows are the ones still running
        active_per_step = (lengths.unsqueeze(0) > torch.arange(1, steps + 1).unsqueeze(1)).sum(dim=1).tolist()
        hiddens, contexts, embeddeds, targets, weights_per_step = [], [], [], [], []
        for step, active in enumerate(active_per_step):
            # gather the grid rows per step from the small per-image tensors: cheaper in the backward
            # pass than slicing caption-sized copies, whose gradients would be zero-filled every step
            rows = image_index[:active]
            state = DecoderState(per_image.memory.index_select(0, rows), per_image.keys.index_select(0, rows), hidden[:active], cell[:active])
            state, context, weights = self._cell(state, embedding_gates[:active, step])
            hidden, cell = state.hidden, state.cell
            weights_per_step.append(F.pad(weights, (0, 0, 0, captions.shape[0] - active)))  # (captions, pixels)
            hiddens.append(hidden)
            contexts.append(context)
            embeddeds.append(embedded[:active, step])
            targets.append(captions[:active, step + 1])
        attention_sums = torch.stack(weights_per_step).sum(dim=0)  # (captions, pixels)
        logits = self._logits(torch.cat(embeddeds), torch.cat(hiddens), torch.cat(contexts))  # (tokens, vocab)
        return TeacherForcedOutput(logits, torch.cat(targets), attention_sums)


def build_decoder(model_config, *, vocab_size: int, encoder_channels: int) -> nn.Module:
    """The decoder a config names (`model.type`)."""
    from captioner.errors import CaptionerError

    if model_config.type != "lstm-attention":
        raise CaptionerError(f"unknown model.type '{model_config.type}'; available: lstm-attention")
    return AttentionLSTMDecoder(
        vocab_size=vocab_size,
        encoder_channels=encoder_channels,
        embed_dim=model_config.embed_dim,
        feature_dim=model_config.feature_dim,
        attention_dim=model_config.attention_dim,
        hidden_dim=model_config.hidden_dim,
        dropout=model_config.dropout,
    )
