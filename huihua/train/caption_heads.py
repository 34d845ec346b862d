"""A caption-reading objective for the text tower: every position from the end token on names the caption.

A contrastive text tower keeps what tells its batch's pictures apart (in the procedural world:
colour) and spreads it over all output positions, while a shape, place or relation word changes
only its own token. The UNet attends to all 77 positions, so it learns colour early and the other
words barely. This objective asks linear heads to read, from the end token and from every padding
token after it (which see the whole caption through the causal mask), each claimed object's shape,
colour, count, size and position, the relation and the background. Training it beside the
contrastive loss makes those outputs carry the whole caption, linearly decodable, which is what a
cross-attention value projection can use.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from huihua.errors import ParameterError
from huihua.synth.scene import COLOURS, POSITIONS, RELATIONS, SHAPES, SIZES, CaptionSpec

MAX_OBJECTS = 2
MAX_COUNT = 3
# (field, number of classes); class 0 is "absent / not claimed" for every field.
OBJECT_FIELDS: tuple[tuple[str, int], ...] = (
    ("shape", 1 + len(SHAPES)), ("colour", 1 + len(COLOURS)), ("count", 1 + MAX_COUNT),
    ("size", 1 + len(SIZES)), ("position", 1 + len(POSITIONS)))
CAPTION_FIELDS: tuple[tuple[str, int], ...] = (("relation", 1 + len(RELATIONS)), ("background", 1 + len(COLOURS)))
FIELDS: tuple[tuple[str, int], ...] = tuple(
    (f"object{i}.{name}", n) for i in range(MAX_OBJECTS) for name, n in OBJECT_FIELDS) + CAPTION_FIELDS


def _index(options: Sequence[str], value: str | None) -> int:
    return 0 if value is None else 1 + list(options).index(value)


def caption_labels(spec: CaptionSpec) -> list[int]:
    """One class index per entry of ``FIELDS`` (0 where the caption claims nothing)."""
    if len(spec.objects) > MAX_OBJECTS:
        raise ParameterError(f"caption_labels: at most {MAX_OBJECTS} objects, got {len(spec.objects)}")
    labels: list[int] = []
    for i in range(MAX_OBJECTS):
        if i >= len(spec.objects):
            labels += [0] * len(OBJECT_FIELDS)
            continue
        claim = spec.objects[i]
        labels += [_index(SHAPES, claim.shape), _index(COLOURS, claim.colour), min(claim.count, MAX_COUNT),
                   _index(SIZES, claim.size), _index(POSITIONS, claim.position)]
    labels += [_index(RELATIONS, spec.relation), _index(COLOURS, spec.background)]
    return labels


class CaptionHeads(nn.Module):
    """Linear read-outs of every caption field from one text-tower output vector."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.proj = nn.Linear(width, sum(n for _, n in FIELDS))

    def forward(self, hidden: Tensor) -> list[Tensor]:
        """(..., width) -> one (..., classes) logit tensor per field."""
        return list(self.proj(hidden).split([n for _, n in FIELDS], dim=-1))


def caption_parse_loss(heads: CaptionHeads, hidden: Tensor, tokens: Tensor, labels: Tensor,
                       end_token: int) -> Tensor:
    """Mean cross-entropy of every field, read at every position holding ``end_token``.

    ``hidden`` (B, T, width) is the tower's normed output, ``tokens`` (B, T) its input window with
    SD1 padding (the end token repeated), ``labels`` (B, len(FIELDS)) from `caption_labels`.
    """
    mask = tokens == end_token
    picked = hidden[mask]                                  # (N, width): end and padding positions
    rows = labels.to(hidden.device)[mask.nonzero()[:, 0]]  # (N, fields)
    logits = heads(picked)
    return torch.stack([F.cross_entropy(lg, rows[:, k]) for k, lg in enumerate(logits)]).mean()


@torch.no_grad()
def parse_accuracy(heads: CaptionHeads, hidden: Tensor, tokens: Tensor, labels: Tensor,
                   end_token: int) -> dict[str, float]:
    """Share of (end or padding position, field) read-outs that are right, per object field name."""
    mask = tokens == end_token
    rows = labels.to(hidden.device)[mask.nonzero()[:, 0]]
    logits = heads(hidden[mask])
    out: dict[str, list[float]] = {}
    for k, ((name, _), lg) in enumerate(zip(FIELDS, logits, strict=True)):
        out.setdefault(name.split(".")[-1], []).append((lg.argmax(-1) == rows[:, k]).float().mean().item())
    return {name: sum(v) / len(v) for name, v in out.items()}
