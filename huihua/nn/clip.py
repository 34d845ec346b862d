"""CLIP text encoders in the two checkpoint layouts Stable Diffusion uses.

``layout="hf"``: transformers' ``CLIPTextModel`` under ``transformer.`` (SD1, SDXL's ViT-L).
``layout="openclip"``: OpenCLIP's text tower under ``model.`` with fused ``in_proj`` (SD2, SDXL's
bigG). Both are the same pre-norm causal transformer; attribute paths equal the checkpoint keys
after the prefix. Nothing is registered as a buffer: position ids are an arange slice and the
causal mask comes from ``scaled_dot_product_attention(is_causal=True)``, so the modules can be
built on the meta device and have every weight streamed in.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from huihua.errors import ParameterError
from huihua.nn.attention import merge_heads, split_heads
from huihua.nn.configs import CLIPTextConfig

# Per batch row: (window offset, vectors (N, W)) replacing token embeddings (textual inversion).
EmbeddingOverrides = list[list[tuple[int, Tensor]]]


@dataclass(frozen=True)
class TextEncoderOutput:
    """Hidden states (B, T, W) after the requested layer, and the pooled (B, P) EOS vector."""

    hidden: Tensor
    pooled: Tensor | None


def quick_gelu(x: Tensor) -> Tensor:
    """OpenAI CLIP's sigmoid approximation of GELU: ``x * sigmoid(1.702 x)``."""
    return x * torch.sigmoid(1.702 * x)


def activation(name: str) -> Callable[[Tensor], Tensor]:
    """The MLP non-linearity named by ``CLIPTextConfig.act``."""
    if name == "quick_gelu":
        return quick_gelu
    if name == "gelu":
        return F.gelu
    raise ParameterError(f"CLIPTextConfig.act: unknown activation {name!r}")


def causal_attention(q: Tensor, k: Tensor, v: Tensor, heads: int) -> Tensor:
    """Causal multi-head self-attention of (B, T, W) projections -> (B, T, W)."""
    out = F.scaled_dot_product_attention(
        split_heads(q, heads), split_heads(k, heads), split_heads(v, heads), is_causal=True
    )
    return merge_heads(out)


def _namespace(**children: nn.Module | nn.Parameter) -> nn.Module:
    """A parameter-free container whose attribute names are checkpoint key segments."""
    module = nn.Module()
    for name, child in children.items():
        setattr(module, name, child)
    return module


# ---------------------------------------------------------------------------------------------
# transformers layout


class HFAttention(nn.Module):
    """``self_attn``: separate ``q_proj``/``k_proj``/``v_proj`` and ``out_proj``."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.q_proj = nn.Linear(width, width)
        self.k_proj = nn.Linear(width, width)
        self.v_proj = nn.Linear(width, width)
        self.out_proj = nn.Linear(width, width)

    def forward(self, x: Tensor) -> Tensor:
        """(B, T, W) -> (B, T, W)."""
        return self.out_proj(causal_attention(self.q_proj(x), self.k_proj(x), self.v_proj(x), self.heads))


class HFEncoderLayer(nn.Module):
    """``encoder.layers.{i}``: pre-norm self-attention and MLP (``fc1``, ``fc2``), each residual."""

    def __init__(self, cfg: CLIPTextConfig) -> None:
        super().__init__()
        self.act = activation(cfg.act)
        self.self_attn = HFAttention(cfg.width, cfg.heads)
        self.layer_norm1 = nn.LayerNorm(cfg.width, eps=cfg.eps)
        self.mlp = _namespace(fc1=nn.Linear(cfg.width, cfg.intermediate), fc2=nn.Linear(cfg.intermediate, cfg.width))
        self.layer_norm2 = nn.LayerNorm(cfg.width, eps=cfg.eps)

    def forward(self, x: Tensor) -> Tensor:
        """(B, T, W) -> (B, T, W)."""
        x = x + self.self_attn(self.layer_norm1(x))
        fc1, fc2 = cast(nn.Linear, self.mlp.fc1), cast(nn.Linear, self.mlp.fc2)
        return x + fc2(self.act(fc1(self.layer_norm2(x))))


# ---------------------------------------------------------------------------------------------
# OpenCLIP layout


class OpenCLIPAttention(nn.Module):
    """``attn``: ``nn.MultiheadAttention``'s fused ``in_proj_weight`` (3W, W) and ``out_proj``."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * width, width))
        self.in_proj_bias = nn.Parameter(torch.empty(3 * width))
        self.out_proj = nn.Linear(width, width)
        if not self.in_proj_weight.is_meta:
            nn.init.xavier_uniform_(self.in_proj_weight)
            nn.init.zeros_(self.in_proj_bias)

    def forward(self, x: Tensor) -> Tensor:
        """(B, T, W) -> (B, T, W)."""
        q, k, v = F.linear(x, self.in_proj_weight, self.in_proj_bias).chunk(3, dim=-1)
        return self.out_proj(causal_attention(q, k, v, self.heads))


class ResidualAttentionBlock(nn.Module):
    """``transformer.resblocks.{i}``: pre-norm attention and MLP (``c_fc``, ``c_proj``), each residual."""

    def __init__(self, cfg: CLIPTextConfig) -> None:
        super().__init__()
        self.act = activation(cfg.act)
        self.ln_1 = nn.LayerNorm(cfg.width, eps=cfg.eps)
        self.attn = OpenCLIPAttention(cfg.width, cfg.heads)
        self.ln_2 = nn.LayerNorm(cfg.width, eps=cfg.eps)
        self.mlp = _namespace(
            c_fc=nn.Linear(cfg.width, cfg.intermediate), c_proj=nn.Linear(cfg.intermediate, cfg.width)
        )

    def forward(self, x: Tensor) -> Tensor:
        """(B, T, W) -> (B, T, W)."""
        x = x + self.attn(self.ln_1(x))
        c_fc, c_proj = cast(nn.Linear, self.mlp.c_fc), cast(nn.Linear, self.mlp.c_proj)
        return x + c_proj(self.act(c_fc(self.ln_2(x))))


# ---------------------------------------------------------------------------------------------
# The encoders


class CLIPTextEncoder(nn.Module):
    """A CLIP text tower: token ids (B, T) -> hidden states after any layer, and the pooled vector.

    Subclasses only lay out the parameters; the forward pass is shared.
    """

    config: CLIPTextConfig

    def token_embedding(self) -> nn.Embedding:
        """The token-embedding table."""
        raise NotImplementedError

    def position_table(self) -> Tensor:
        """The learned position embeddings (max_positions, W)."""
        raise NotImplementedError

    def embed(self, tokens: Tensor, overrides: EmbeddingOverrides | None = None) -> Tensor:
        """Token plus position embeddings, (B, T) -> (B, T, W).

        ``overrides[b]`` lists ``(offset, vectors (N, W))`` that replace the token embeddings of row
        ``b`` at positions ``offset .. offset+N-1`` (textual inversion) before positions are added.
        """
        x = self.token_embedding()(tokens)
        if overrides:
            x = x.clone()
            for b, row in enumerate(overrides):
                for offset, vectors in row:
                    n = min(vectors.shape[0], x.shape[1] - offset)
                    x[b, offset:offset + n] = vectors[:n].to(device=x.device, dtype=x.dtype)
        return x + self.position_table()[: tokens.shape[1]]

    def blocks(self) -> nn.ModuleList:
        """The transformer layers in order."""
        raise NotImplementedError

    def final_norm(self, x: Tensor) -> Tensor:
        """The final LayerNorm."""
        raise NotImplementedError

    def project(self, pooled: Tensor) -> Tensor:
        """``text_projection`` of the pooled vector when the tower has one, else the identity."""
        raise NotImplementedError

    def _check(self, tokens: Tensor, layer: int) -> int:
        """Validate the inputs; return how many layers produce the requested hidden state."""
        n = self.config.layers
        if not -n <= layer <= -1:
            raise ParameterError(f"layer: must be between {-n} and -1 for a {n}-layer text encoder, got {layer}")
        if tokens.dim() != 2 or tokens.dtype not in (torch.int64, torch.int32):
            raise ParameterError(f"tokens: need integer ids of shape (B, T), got {tuple(tokens.shape)} {tokens.dtype}")
        if tokens.shape[1] > self.config.max_positions:
            limit = self.config.max_positions
            raise ParameterError(f"tokens: {tokens.shape[1]} positions exceed the model's {limit}")
        return n + layer + 1

    def forward(
        self, tokens: Tensor, layer: int = -1, final_norm: bool = True, want_pooled: bool = True,
        embedding_overrides: EmbeddingOverrides | None = None,
    ) -> TextEncoderOutput:
        """Hidden state after ``layer`` (-1 last, -2 penultimate), normed if ``final_norm``; pooled EOS."""
        stop = self._check(tokens, layer)
        blocks = self.blocks()
        run = len(blocks) if want_pooled else stop
        x = self.embed(tokens, embedding_overrides)
        hidden = x
        for i in range(run):
            x = blocks[i](x)
            if i + 1 == stop:
                hidden = x
        pooled = None
        if want_pooled:
            last = self.final_norm(x)
            # CLIP pools at the end token, which has the largest id in its vocabulary.
            eos = tokens.argmax(dim=-1)
            pooled = self.project(last[torch.arange(last.shape[0], device=last.device), eos])
            if final_norm and stop == run:
                return TextEncoderOutput(hidden=last, pooled=pooled)
        return TextEncoderOutput(hidden=self.final_norm(hidden) if final_norm else hidden, pooled=pooled)


class HFCLIPTextEncoder(CLIPTextEncoder):
    """transformers' ``CLIPTextModel`` (``CLIPTextModelWithProjection`` with a projection) layout."""

    def __init__(self, cfg: CLIPTextConfig) -> None:
        super().__init__()
        self.config = cfg
        text_model = _namespace(
            embeddings=_namespace(
                token_embedding=nn.Embedding(cfg.vocab_size, cfg.width),
                position_embedding=nn.Embedding(cfg.max_positions, cfg.width),
            ),
            encoder=_namespace(layers=nn.ModuleList(HFEncoderLayer(cfg) for _ in range(cfg.layers))),
            final_layer_norm=nn.LayerNorm(cfg.width, eps=cfg.eps),
        )
        self.transformer = _namespace(text_model=text_model)
        if cfg.projection_dim is not None:
            self.transformer.text_projection = nn.Linear(cfg.width, cfg.projection_dim, bias=False)

    def _text_model(self) -> nn.Module:
        return cast(nn.Module, self.transformer.text_model)

    def token_embedding(self) -> nn.Embedding:
        return cast(nn.Embedding, self._text_model().get_submodule("embeddings.token_embedding"))

    def position_table(self) -> Tensor:
        return cast(nn.Embedding, self._text_model().get_submodule("embeddings.position_embedding")).weight

    def blocks(self) -> nn.ModuleList:
        return cast(nn.ModuleList, self._text_model().get_submodule("encoder.layers"))

    def final_norm(self, x: Tensor) -> Tensor:
        return cast(nn.LayerNorm, self._text_model().final_layer_norm)(x)

    def project(self, pooled: Tensor) -> Tensor:
        if self.config.projection_dim is None:
            return pooled
        return cast(nn.Linear, self.transformer.text_projection)(pooled)


class OpenCLIPTextEncoder(CLIPTextEncoder):
    """OpenCLIP's text tower layout (``model.transformer.resblocks``, fused ``in_proj``)."""

    def __init__(self, cfg: CLIPTextConfig) -> None:
        super().__init__()
        self.config = cfg
        self.model = _namespace(
            token_embedding=nn.Embedding(cfg.vocab_size, cfg.width),
            positional_embedding=nn.Parameter(torch.empty(cfg.max_positions, cfg.width)),
            transformer=_namespace(resblocks=nn.ModuleList(ResidualAttentionBlock(cfg) for _ in range(cfg.layers))),
            ln_final=nn.LayerNorm(cfg.width, eps=cfg.eps),
        )
        if cfg.projection_dim is not None:
            self.model.text_projection = nn.Parameter(torch.empty(cfg.width, cfg.projection_dim))
        for p in (self.model.positional_embedding, getattr(self.model, "text_projection", None)):
            if isinstance(p, Tensor) and not p.is_meta:
                nn.init.normal_(p, std=cfg.width**-0.5)

    def token_embedding(self) -> nn.Embedding:
        return cast(nn.Embedding, self.model.token_embedding)

    def position_table(self) -> Tensor:
        return cast(Tensor, self.model.positional_embedding)

    def blocks(self) -> nn.ModuleList:
        return cast(nn.ModuleList, self.model.get_submodule("transformer.resblocks"))

    def final_norm(self, x: Tensor) -> Tensor:
        return cast(nn.LayerNorm, self.model.ln_final)(x)

    def project(self, pooled: Tensor) -> Tensor:
        if self.config.projection_dim is None:
            return pooled
        return pooled @ cast(Tensor, self.model.text_projection)


def build_text_encoder(cfg: CLIPTextConfig) -> CLIPTextEncoder:
    """The text encoder of ``cfg.layout`` (works inside ``with torch.device("meta")``)."""
    if cfg.width % cfg.heads:
        raise ParameterError(f"CLIPTextConfig.heads: {cfg.heads} does not divide width {cfg.width}")
    if cfg.layout == "hf":
        return HFCLIPTextEncoder(cfg)
    if cfg.layout == "openclip":
        return OpenCLIPTextEncoder(cfg)
    raise ParameterError(f"CLIPTextConfig.layout: unknown layout {cfg.layout!r}")
