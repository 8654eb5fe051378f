"""The entailment network: a picture and a sentence in, three logits (yes, no, maybe) out.

Runs in worker processes (the app) and in the offline train and evaluate scripts; imports
torch. Three parts, all small (about 0.2 M parameters, under 1 MB as float32):

- the image encoder, a compact CNN: 32x32 RGB -> one feature vector per cell of the 4x4
  grid (four convolutions, three of stride 2), plus a learned embedding of each cell's place;
- the text encoder, a bidirectional GRU over word embeddings (the word-level vocabulary of
  ``sentences.vocabulary()``), one vector per word;
- the fusion: the sentence vector scales and shifts every cell vector (FiLM); each cell's
  match scores add up to a soft count, read as bumps at 0, 1, 2... Then the sentence vector
  plus the sum of the cells and the count (as the first token: counting needs sums), the
  16 cell vectors and the word vectors go through
  a 2-layer transformer encoder (padding masked); a linear classifier reads the first token.

Training adds a second loss on the image encoder alone: what each cell holds (``cell_head``),
from the scene's layout, so that the CNN learns the shapes and colours early.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from watchkeeper.apps.entailment.scenes import COLOURS, GRID, SHAPES

__all__ = ["EntailmentNet", "NetConfig"]

#: The soft count of matching cells is read as bumps at 0..COUNT_BINS - 1 of this width.
COUNT_BINS = 8
COUNT_WIDTH = 0.35


@dataclass(frozen=True)
class NetConfig:
    """The network's sizes (recorded in the weights file's metadata)."""

    vocab_size: int
    width: int = 64
    word_dim: int = 48
    heads: int = 4
    layers: int = 2

    def as_metadata(self) -> dict[str, str]:
        return {f"net.{k}": str(v) for k, v in asdict(self).items()}

    @classmethod
    def from_metadata(cls, metadata: dict[str, str]) -> NetConfig:
        return cls(**{k[4:]: int(v) for k, v in metadata.items() if k.startswith("net.")})


class ImageEncoder(nn.Module):
    """32x32 RGB (values 0..1) -> (batch, 16, width): one vector per grid cell."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.convs = nn.Sequential(
            nn.Conv2d(3, 32, 4, stride=2, padding=1), nn.ReLU(),  # 16x16
            nn.Conv2d(32, 64, 3, stride=2, padding=1), nn.ReLU(),  # 8x8
            nn.Conv2d(64, 64, 3, padding=1), nn.ReLU(),
            nn.Conv2d(64, 64, 3, stride=2, padding=1), nn.ReLU(),  # 4x4: one vector per cell
            nn.Conv2d(64, width, 1),
        )
        self.place = nn.Parameter(0.02 * torch.randn(1, GRID * GRID, width))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.convs(images - 0.5).flatten(2).transpose(1, 2)  # place: added by the fusion


class TextEncoder(nn.Module):
    """Token ids (batch, tokens) -> the words (batch, tokens, width) and the sentence
    (batch, width): a bidirectional GRU's outputs and its two final states."""

    def __init__(self, vocab_size: int, word_dim: int, width: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab_size, word_dim, padding_idx=0)
        self.gru = nn.GRU(word_dim, word_dim, batch_first=True, bidirectional=True)
        self.words = nn.Linear(2 * word_dim, width)
        self.sentence = nn.Linear(2 * word_dim, width)

    def forward(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        lengths = (ids != 0).sum(dim=1).clamp(min=1).cpu()
        packed = nn.utils.rnn.pack_padded_sequence(self.embed(ids), lengths, batch_first=True,
                                                   enforce_sorted=False)
        out, last = self.gru(packed)
        hidden, _ = nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=ids.shape[1])
        return self.words(hidden), self.sentence(torch.cat([last[0], last[1]], dim=1))


class EntailmentNet(nn.Module):
    """Image and token ids in, logits over (yes, no, maybe) out."""

    def __init__(self, config: NetConfig) -> None:
        super().__init__()
        self.config = config
        width = config.width
        self.image = ImageEncoder(width)
        self.text = TextEncoder(config.vocab_size, config.word_dim, width)
        self.film = nn.Linear(width, 2 * width)  # the sentence scales and shifts each cell
        self.score = nn.Linear(width, 1)  # how much a cell holds what the sentence names
        self.counted = nn.Linear(COUNT_BINS, width)
        self.cells = nn.Linear(width, width)
        self.pool = nn.Linear(width, width)
        self.kind = nn.Parameter(0.02 * torch.randn(1, 2, width))  # picture part, sentence part
        layer = nn.TransformerEncoderLayer(width, config.heads, 2 * width, dropout=0.0,
                                           batch_first=True, norm_first=True)
        self.fusion = nn.TransformerEncoder(layer, config.layers, enable_nested_tensor=False)
        self.head = nn.Sequential(nn.LayerNorm(width), nn.Linear(width, 3))
        #: Training only: what each cell holds (empty, or one of the shape-colour kinds).
        self.cell_head = nn.Linear(width, 1 + len(SHAPES) * len(COLOURS))

    def forward(self, images: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        return self.forward_with_cells(images, ids)[0]

    def _count(self, matched: torch.Tensor) -> torch.Tensor:
        """The soft number of cells that match, as bumps around 0, 1, ... COUNT_BINS - 1."""
        number = torch.sigmoid(self.score(matched)).sum(dim=1)  # (batch, 1)
        centres = torch.arange(COUNT_BINS, dtype=number.dtype, device=number.device)
        return torch.exp(-((number - centres) ** 2) / (2 * COUNT_WIDTH**2))

    def forward_with_cells(self, images: torch.Tensor,
                           ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The logits, and each cell's logits over what it holds (training's second loss)."""
        ids = ids[:, :max(1, int((ids != 0).sum(dim=1).max()))]  # no column of padding only
        words, sentence = self.text(ids)
        gamma, beta = self.film(sentence).unsqueeze(1).chunk(2, dim=2)
        seen_cells = self.image(images)
        matched = torch.relu(seen_cells * (1 + gamma) + beta)
        cells = self.cells(matched) + self.image.place + self.kind[:, :1]
        first = sentence + self.pool(matched.sum(dim=1) / GRID) + self.counted(self._count(matched))
        tokens = torch.cat([first.unsqueeze(1), cells, words + self.kind[:, 1:]], dim=1)
        seen = torch.zeros(ids.shape[0], 1 + cells.shape[1], dtype=torch.bool, device=ids.device)
        padding = torch.cat([seen, ids == 0], dim=1)
        logits = self.head(self.fusion(tokens, src_key_padding_mask=padding)[:, 0])
        return logits, self.cell_head(seen_cells)
