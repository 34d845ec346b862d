"""huihua's tiny CLIP: our CLIP text transformer + a small ViT, trained with CLIP's contrastive loss.

The text tower is exactly the SD1 conditioning encoder (``HFCLIPTextEncoder``), so it can be stored
under ``cond_stage_model.`` and condition the UNet; the projections, the vision tower and the
temperature travel under the ``huihua_clip.`` prefix, which the checkpoint loader ignores.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from huihua.checkpoints.tokenizer import CLIPTokenizer
from huihua.errors import ParameterError
from huihua.nn.clip import build_text_encoder
from huihua.nn.configs import CLIPTextConfig
from huihua.synth.captions import parse_caption
from huihua.synth.scene import COLOURS, SHAPES
from huihua.synth.world import make_batch, render_caption
from huihua.train.caption_heads import CaptionHeads, caption_labels, caption_parse_loss
from huihua.train.vision import VisionTransformer, ViTConfig

PAD_TOKEN = 49407  # SD1 windows pad with the end token


@dataclass(frozen=True)
class CLIPTrainConfig:
    """Shapes and data of the contrastive stage (optimisation lives in the stage's LoopConfig)."""

    text: CLIPTextConfig
    vision: ViTConfig
    embed_dim: int = 128
    batch: int = 128
    # Captions are short and the text tower is causal: a 32-token window gives the same pooled
    # vector as the 77-token one while costing less than half.
    tokens: int = 32
    # Weight of the caption-reading loss (`caption_heads`); 0 trains the plain contrastive CLIP.
    # With it, the text windows are the UNet's full 77 tokens, since every padding position is read.
    parse_weight: float = 0.0


class TinyCLIP(nn.Module):
    """Text and image towers with projections into one embedding space and a learned temperature."""

    def __init__(self, text: CLIPTextConfig, vision: ViTConfig, embed_dim: int, caption_heads: bool = False) -> None:
        super().__init__()
        self.text = build_text_encoder(text)
        self.text_projection = nn.Linear(text.width, embed_dim, bias=False)
        self.visual = VisionTransformer(vision)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / 0.07)))
        # Built last, so the other weights draw the same initial values with or without it.
        self.caption_heads = CaptionHeads(text.width) if caption_heads else None

    def encode_text(self, tokens: Tensor) -> Tensor:
        """Token windows (B, T) -> unit-norm text embeddings (B, E)."""
        pooled = self.text(tokens, want_pooled=True).pooled
        return F.normalize(self.text_projection(pooled), dim=-1)

    def encode_image(self, pixels: Tensor) -> Tensor:
        """Pixels (B, 3, H, W) in [-1, 1] -> unit-norm image embeddings (B, E)."""
        return F.normalize(self.visual(pixels), dim=-1)

    def extra_state_dict(self) -> dict[str, Tensor]:
        """Everything but the text transformer, keyed as stored under ``huihua_clip.``."""
        out = {f"visual.{k}": v for k, v in self.visual.state_dict().items()}
        out["text_projection.weight"] = self.text_projection.weight
        out["logit_scale"] = self.logit_scale.detach()
        return out


def tokenize(tokenizer: CLIPTokenizer, captions: Sequence[str], length: int = 77) -> Tensor:
    """Captions -> (B, length) int64 windows ``[bos] ids [eos] pad...`` (SD1 padding)."""
    return torch.tensor([tokenizer(c, PAD_TOKEN, length) for c in captions], dtype=torch.long)


def to_pixels(images: np.ndarray) -> Tensor:
    """uint8 (B, H, W, 3) -> float (B, 3, H, W) in [-1, 1]."""
    return torch.from_numpy(images).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


def contrastive_loss(model: TinyCLIP, pixels: Tensor, tokens: Tensor, txt: Tensor | None = None) -> Tensor:
    """CLIP's symmetric cross-entropy over the batch's image-text similarity matrix.

    ``txt`` passes text embeddings already computed from ``tokens``.
    """
    img = model.encode_image(pixels)
    txt = model.encode_text(tokens) if txt is None else txt
    scale = model.logit_scale.clamp(max=math.log(100.0)).exp()
    logits = scale * img @ txt.T
    target = torch.arange(logits.shape[0], device=logits.device)
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))


def clip_loss_fn(model: TinyCLIP, cfg: CLIPTrainConfig, tokenizer: CLIPTokenizer, data_seed: int):
    """The loss of step ``i``: a fresh world batch drawn from ``data_seed + i``."""

    device = next(model.parameters()).device

    if cfg.parse_weight < 0:
        raise ParameterError(f"parse_weight must be at least 0, got {cfg.parse_weight}")
    if cfg.parse_weight > 0 and model.caption_heads is None:
        raise ParameterError("parse_weight > 0 needs a TinyCLIP built with caption_heads=True")

    def loss(step: int) -> Tensor:
        images, captions = make_batch(data_seed + step, cfg.batch, "train")
        pixels = to_pixels(images).to(device)
        if cfg.parse_weight <= 0:
            return contrastive_loss(model, pixels, tokenize(tokenizer, captions, cfg.tokens).to(device))
        tokens = tokenize(tokenizer, captions).to(device)
        out = model.text(tokens, want_pooled=True)
        txt = F.normalize(model.text_projection(out.pooled), dim=-1)
        labels = torch.tensor([caption_labels(parse_caption(c)) for c in captions])
        assert model.caption_heads is not None  # checked when the loss was built
        return (contrastive_loss(model, pixels, tokens, txt)
                + cfg.parse_weight * caption_parse_loss(model.caption_heads, out.hidden, tokens, labels, PAD_TOKEN))

    return loss


@torch.no_grad()
def zero_shot_accuracy(model: TinyCLIP, tokenizer: CLIPTokenizer, seed: int, n: int = 200,
                       tokens: int = 32) -> dict[str, float]:
    """Zero-shot colour x shape classification (40 classes) and in-batch retrieval, top-1."""

    device = next(model.parameters()).device
    classes = [f"a {c} {s}" for c in COLOURS for s in SHAPES]
    text = model.encode_text(tokenize(tokenizer, classes, tokens).to(device))
    rng = np.random.default_rng(seed)
    labels = rng.integers(len(classes), size=n)
    images = np.stack([render_caption(classes[k], seed + i) for i, k in enumerate(labels)])
    pred = (model.encode_image(to_pixels(images).to(device)) @ text.T).argmax(dim=1).cpu().numpy()
    images, captions = make_batch(seed, n, "train")
    sims = (model.encode_image(to_pixels(images).to(device))
            @ model.encode_text(tokenize(tokenizer, captions, tokens).to(device)).T)
    retrieval = (sims.argmax(dim=1).cpu() == torch.arange(n)).float().mean().item()
    return {"zero_shot_colour_shape": float((pred == labels).mean()), "retrieval_top1": retrieval}
