"""LoRA / LyCORIS parsing, key mapping and merge math, the family check, and the file registry.

Merged weights are compared with reference formulas written out here
(``W + m * (alpha/rank) * up @ down``, LoHa ``(w1a@w1b) * (w2a@w2b)``, LoKr ``kron(w1, w2)``):
tolerance 1e-5 absolute on fp32 weights of magnitude ~1. Key mapping is cross-checked against
diffusers' own kohya -> diffusers conversion (``diffusers.loaders.lora_conversion_utils``): a full
``load_lora_weights`` needs the ``peft`` package, which is not installed, so the comparison is on
what diffusers' converters produce from the same file, resolved by our loader.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from functools import cache
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import save_file
from torch import Tensor, nn

from huihua.adapters.lora import LoraPatchSet, load_lora, lora_from_tensors
from huihua.adapters.lora_keys import LoraTargets, build_targets
from huihua.adapters.registry import (
    EMBEDDING_EXTENSIONS,
    LORA_EXTENSIONS,
    FileHashes,
    find_file,
    hashes_field,
    list_files,
)
from huihua.nn.configs import CLIPTextConfig, UNetConfig, VAEConfig
from huihua.checkpoints.specs import ModelSpec, TextEncoderUse
from huihua.errors import CheckpointError, ParameterError, PromptError, UnsafePickleError
from huihua.nn.clip import build_text_encoder
from huihua.nn.unet import UNetModel
from huihua.adapters.patcher import LoraUse, WeightPatcher
from tests.tiny_models import perturb_, tiny_unet_config

TOL = 1e-5

# ---------------------------------------------------------------------------------------------
# tiny models (shared with test_patcher.py and test_textual_inversion.py)

TEXT_CONFIGS = {
    "sd1": (CLIPTextConfig(width=24, layers=2, heads=4, intermediate=48),),
    "sd2": (CLIPTextConfig(layout="openclip", width=24, layers=3, heads=4, intermediate=48, act="gelu", pad_token=0),),
    "sdxl": (
        CLIPTextConfig(width=8, layers=2, heads=2, intermediate=16),
        CLIPTextConfig(layout="openclip", width=16, layers=3, heads=2, intermediate=32, act="gelu",
                       projection_dim=16, pad_token=0),
    ),
}


class TinyModel(SimpleNamespace):
    """spec, unet, text_encoders, targets of one tiny seeded model (an Engine look-alike)."""

    __eq__ = object.__eq__  # identity, like Engine (hashable: usable as a weak dictionary key)
    __hash__ = object.__hash__


def tiny_model(family: str = "sd1", seed: int = 0, dtype: torch.dtype = torch.float32) -> TinyModel:
    """Seeded tiny UNet + text encoders shaped like ``family`` (sd1, sd2, sdxl), in eval mode."""
    torch.manual_seed(seed)
    cfg = tiny_unet_config(family)  # type: ignore[arg-type]
    unet = perturb_(UNetModel(cfg), seed).eval().requires_grad_(False).to(dtype)
    prefixes = ("cond_stage_model.",) if family != "sdxl" else ("conditioner.embedders.0.", "conditioner.embedders.1.")
    uses = tuple(TextEncoderUse(c, p, pooled=i == len(prefixes) - 1)
                 for i, (c, p) in enumerate(zip(TEXT_CONFIGS[family], prefixes)))
    texts = tuple(perturb_(build_text_encoder(u.config), seed).eval().requires_grad_(False).to(dtype) for u in uses)
    spec = ModelSpec(family, cfg, VAEConfig(), uses)  # type: ignore[arg-type]
    return TinyModel(spec=spec, unet=unet, text_encoders=texts, targets=build_targets(spec, unet, texts))


def components(model: TinyModel) -> dict[str, nn.Module]:
    out: dict[str, nn.Module] = {"unet": model.unet}
    out |= {f"text_encoder_{i}": te for i, te in enumerate(model.text_encoders)}
    return out


def snapshot(model: TinyModel) -> dict[str, Tensor]:
    """Every parameter of every component, cloned."""
    return {f"{c}.{n}": p.detach().clone() for c, m in components(model).items() for n, p in m.named_parameters()}


def param(model: TinyModel, component: str, name: str) -> Tensor:
    return components(model)[component].get_parameter(name).detach()


def lora_pair(gen: torch.Generator, out: int, inp: int, rank: int = 4, kernel: int | None = None,
              scale: float = 0.3) -> tuple[Tensor, Tensor]:
    """Random (up, down): linear (out, r)/(r, in), or conv (out, r, 1, 1)/(r, in, k, k)."""
    if kernel is None:
        return torch.randn(out, rank, generator=gen) * scale, torch.randn(rank, inp, generator=gen) * scale
    return (torch.randn(out, rank, 1, 1, generator=gen) * scale,
            torch.randn(rank, inp, kernel, kernel, generator=gen) * scale)


def kohya(name: str, up: Tensor, down: Tensor, alpha: float | None = None) -> dict[str, Tensor]:
    sd = {f"{name}.lora_up.weight": up, f"{name}.lora_down.weight": down}
    if alpha is not None:
        sd[f"{name}.alpha"] = torch.tensor(alpha)
    return sd


def apply(model: TinyModel, patches: LoraPatchSet, te: float = 1.0, unet: float = 1.0) -> WeightPatcher:
    patcher = WeightPatcher(components(model))
    patcher.apply([LoraUse(patches, te, unet)])
    return patcher


def assert_close(got: Tensor, want: Tensor) -> None:
    assert got.shape == want.shape
    err = (got.float() - want.float()).abs().max().item()
    assert err <= TOL, f"max abs error {err:.3g} > {TOL}"


# ---------------------------------------------------------------------------------------------
# merge math


def test_kohya_lora_and_locon_match_reference_merge():
    model = tiny_model("sd1")
    g = torch.Generator().manual_seed(1)
    sd: dict[str, Tensor] = {}
    q_up, q_down = lora_pair(g, 32, 32)
    sd |= kohya("lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q", q_up, q_down, alpha=2.0)
    k_up, k_down = lora_pair(g, 64, 24, rank=2)  # cross-attention to_k reads the 24-wide context
    sd |= kohya("lora_unet_up_blocks_0_attentions_1_transformer_blocks_0_attn2_to_k", k_up, k_down, alpha=1.0)
    p_up, p_down = lora_pair(g, 32, 32, kernel=1)  # SD1 proj_in is a 1x1 convolution
    sd |= kohya("lora_unet_down_blocks_0_attentions_1_proj_in", p_up, p_down, alpha=8.0)
    c_up, c_down = lora_pair(g, 64, 32, rank=3, kernel=3)  # LoCon on a 3x3 ResBlock conv
    sd |= kohya("lora_unet_down_blocks_1_resnets_0_conv1", c_up, c_down, alpha=1.5)
    t_up, t_down = lora_pair(g, 128, 32)  # no alpha: scale 1
    sd |= kohya("lora_unet_time_embedding_linear_1", t_up, t_down)
    # Tucker LoCon (lora_mid) on the downsampler's stride-2 conv
    m_up, m_down = torch.randn(32, 2, 1, 1, generator=g) * 0.3, torch.randn(2, 32, 1, 1, generator=g) * 0.3
    m_mid = torch.randn(2, 2, 3, 3, generator=g) * 0.3
    sd |= kohya("lora_unet_down_blocks_0_downsamplers_0_conv", m_up, m_down, alpha=1.0)
    sd["lora_unet_down_blocks_0_downsamplers_0_conv.lora_mid.weight"] = m_mid
    e_up, e_down = lora_pair(g, 24, 24)
    sd |= kohya("lora_te_text_model_encoder_layers_0_self_attn_q_proj", e_up, e_down, alpha=4.0)
    f_up, f_down = lora_pair(g, 24, 48, rank=2)
    sd |= kohya("lora_te_text_model_encoder_layers_1_mlp_fc2", f_up, f_down, alpha=1.0)

    before = snapshot(model)
    patches = lora_from_tensors(sd, model.targets, "mix")
    assert len(patches.patches) == 8
    te_w, unet_w = 0.5, -0.8
    patcher = apply(model, patches, te_w, unet_w)
    u = "unet."
    expect = {
        u + "input_blocks.1.1.transformer_blocks.0.attn1.to_q.weight": unet_w * 2.0 / 4 * q_up @ q_down,
        u + "output_blocks.1.1.transformer_blocks.0.attn2.to_k.weight": unet_w * 1.0 / 2 * k_up @ k_down,
        u + "input_blocks.2.1.proj_in.weight": unet_w * 8.0 / 4 * torch.einsum("or,ri->oi", p_up[:, :, 0, 0],
                                                                               p_down[:, :, 0, 0])[..., None, None],
        u + "input_blocks.4.0.in_layers.2.weight": unet_w * 1.5 / 3 * torch.einsum("or,rihw->oihw", c_up[:, :, 0, 0], c_down),
        u + "time_embed.0.weight": unet_w * t_up @ t_down,
        u + "input_blocks.3.0.op.weight": unet_w * 1.0 / 2 * torch.einsum(
            "or,rshw,si->oihw", m_up[:, :, 0, 0], m_mid, m_down[:, :, 0, 0]),
        "text_encoder_0.transformer.text_model.encoder.layers.0.self_attn.q_proj.weight": te_w * 4.0 / 4 * e_up @ e_down,
        "text_encoder_0.transformer.text_model.encoder.layers.1.mlp.fc2.weight": te_w * 1.0 / 2 * f_up @ f_down,
    }
    now = snapshot(model)
    for key, value in before.items():
        if key in expect:
            assert_close(now[key], value + expect[key])
        else:
            assert torch.equal(now[key], value), key  # untouched parameters stay bit-identical
    patcher.restore()
    assert all(torch.equal(v, before[k]) for k, v in snapshot(model).items())


def test_loha_formulas_linear_and_tucker_conv():
    model = tiny_model("sd1")
    g = torch.Generator().manual_seed(2)
    r = lambda *s: torch.randn(*s, generator=g) * 0.5  # noqa: E731
    lin = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_v"  # (32, 24)
    w1a, w1b, w2a, w2b = r(32, 3), r(3, 24), r(32, 3), r(3, 24)
    conv = "lora_unet_up_blocks_1_resnets_0_conv2"  # (32, 32, 3, 3)
    t1, t2, c1a, c1b, c2a, c2b = r(2, 2, 3, 3), r(2, 2, 3, 3), r(2, 32), r(2, 32), r(2, 32), r(2, 32)
    sd = {
        f"{lin}.hada_w1_a": w1a, f"{lin}.hada_w1_b": w1b, f"{lin}.hada_w2_a": w2a, f"{lin}.hada_w2_b": w2b,
        f"{lin}.alpha": torch.tensor(1.5),
        f"{conv}.hada_w1_a": c1a, f"{conv}.hada_w1_b": c1b, f"{conv}.hada_w2_a": c2a, f"{conv}.hada_w2_b": c2b,
        f"{conv}.hada_t1": t1, f"{conv}.hada_t2": t2, f"{conv}.alpha": torch.tensor(4.0),
    }
    before = snapshot(model)
    apply(model, lora_from_tensors(sd, model.targets, "loha"), unet=0.7)

    def cp(t: Tensor, wa: Tensor, wb: Tensor) -> Tensor:  # LyCORIS make_weight_cp, two steps
        return torch.einsum("ijkl,ip->pjkl", torch.einsum("ijkl,jr->irkl", t, wb), wa)

    w_lin = "unet.input_blocks.1.1.transformer_blocks.0.attn2.to_v.weight"
    assert_close(param(model, "unet", w_lin[5:]), before[w_lin] + 0.7 * (1.5 / 3) * (w1a @ w1b) * (w2a @ w2b))
    w_conv = "unet.output_blocks.3.0.out_layers.3.weight"
    assert_close(param(model, "unet", w_conv[5:]), before[w_conv] + 0.7 * (4.0 / 2) * cp(t1, c1a, c1b) * cp(t2, c2a, c2b))


def test_lokr_formulas_linear_and_conv():
    model = tiny_model("sd1")
    g = torch.Generator().manual_seed(3)
    r = lambda *s: torch.randn(*s, generator=g) * 0.5  # noqa: E731
    lin = "lora_unet_mid_block_attentions_0_transformer_blocks_0_ff_net_2"  # (64, 256)
    w1, w2a, w2b = r(4, 8), r(16, 2), r(2, 32)
    conv = "lora_unet_up_blocks_0_resnets_1_conv1"  # (64, 128, 3, 3)
    cw1, cw2 = r(2, 4), r(32, 32, 3, 3)
    full = "lora_te_text_model_encoder_layers_0_self_attn_out_proj"  # (24, 24): both halves stored whole
    fw1, fw2 = r(2, 3), r(12, 8)
    sd = {
        f"{lin}.lokr_w1": w1, f"{lin}.lokr_w2_a": w2a, f"{lin}.lokr_w2_b": w2b, f"{lin}.alpha": torch.tensor(1.0),
        f"{conv}.lokr_w1": cw1, f"{conv}.lokr_w2": cw2, f"{conv}.alpha": torch.tensor(8.0),
        f"{full}.lokr_w1": fw1, f"{full}.lokr_w2": fw2, f"{full}.alpha": torch.tensor(8.0),
    }
    before = snapshot(model)
    apply(model, lora_from_tensors(sd, model.targets, "lokr"), te=-1.0, unet=0.5)
    w_lin = "middle_block.1.transformer_blocks.0.ff.net.2.weight"
    assert_close(param(model, "unet", w_lin), before["unet." + w_lin] + 0.5 * (1.0 / 2) * torch.kron(w1, w2a @ w2b))
    w_conv = "output_blocks.1.0.in_layers.2.weight"
    # A1111's conv LoKr: kron of w1 (as (a, b, 1, 1)) with the 4-D w2; no low-rank part: scale 1
    assert_close(param(model, "unet", w_conv), before["unet." + w_conv] + 0.5 * torch.kron(cw1[:, :, None, None], cw2))
    w_full = "transformer.text_model.encoder.layers.0.self_attn.out_proj.weight"
    assert_close(param(model, "text_encoder_0", w_full), before["text_encoder_0." + w_full] - torch.kron(fw1, fw2))


def test_full_diff_with_bias_and_dyn_rank():
    model = tiny_model("sd1")
    g = torch.Generator().manual_seed(4)
    name = "lora_unet_down_blocks_0_attentions_0_proj_out"  # conv 1x1 with bias
    diff, diff_b = torch.randn(32, 32, 1, 1, generator=g), torch.randn(32, generator=g)
    up, down = lora_pair(g, 32, 32, rank=4)
    q = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q"
    sd = {f"{name}.diff": diff, f"{name}.diff_b": diff_b, **kohya(q, up, down, alpha=4.0)}
    before = snapshot(model)
    patches = lora_from_tensors(sd, model.targets, "full")
    patcher = WeightPatcher(components(model))
    patcher.apply([LoraUse(patches, unet_weight=0.25, dyn=2)])
    base = "input_blocks.1.1.proj_out"
    assert_close(param(model, "unet", base + ".weight"), before[f"unet.{base}.weight"] + 0.25 * diff)
    assert_close(param(model, "unet", base + ".bias"), before[f"unet.{base}.bias"] + 0.25 * diff_b)
    w = "input_blocks.1.1.transformer_blocks.0.attn1.to_q.weight"
    # dyn keeps the first 2 ranks; the scale stays alpha / full rank (A1111)
    assert_close(param(model, "unet", w), before["unet." + w] + 0.25 * (4.0 / 4) * up[:, :2] @ down[:2])


# ---------------------------------------------------------------------------------------------
# key mapping


def test_sdxl_names_fused_openclip_rows_and_ldm_unet_names():
    model = tiny_model("sdxl")
    g = torch.Generator().manual_seed(5)
    sd: dict[str, Tensor] = {}
    pairs = {}
    for part in ("q_proj", "k_proj", "v_proj", "out_proj"):
        pairs[part] = lora_pair(g, 16, 16, rank=2)
        sd |= kohya(f"lora_te2_text_model_encoder_layers_1_self_attn_{part}", *pairs[part], alpha=1.0)
    fc1 = lora_pair(g, 32, 16, rank=2)
    sd |= kohya("lora_te2_text_model_encoder_layers_2_mlp_fc1", *fc1, alpha=2.0)
    k_only = lora_pair(g, 16, 16, rank=2)
    sd |= kohya("lora_te2_text_model_encoder_layers_0_self_attn_k_proj", *k_only, alpha=2.0)
    sd["lora_te2_text_model_encoder_layers_0_self_attn_k_proj.diff_b"] = bias = torch.randn(16, generator=g)
    te1 = lora_pair(g, 8, 8, rank=2)
    sd |= kohya("lora_te1_text_model_encoder_layers_1_self_attn_v_proj", *te1, alpha=2.0)
    # kohya's SDXL UNet names are LDM paths
    attn = lora_pair(g, 64, 24, rank=2)
    sd |= kohya("lora_unet_input_blocks_4_1_transformer_blocks_1_attn2_to_k", *attn, alpha=2.0)
    up_conv = lora_pair(g, 64, 64, rank=2, kernel=3)
    sd |= kohya("lora_unet_output_blocks_2_2_conv", *up_conv, alpha=2.0)
    label = lora_pair(g, 128, 64, rank=2)
    sd |= kohya("lora_unet_label_emb_0_0", *label, alpha=2.0)

    before = snapshot(model)
    apply(model, lora_from_tensors(sd, model.targets, "xl"), te=0.6, unet=1.2)
    te2, w = "text_encoder_1.", 16
    fused = param(model, "text_encoder_1", "model.transformer.resblocks.1.attn.in_proj_weight")
    old = before[te2 + "model.transformer.resblocks.1.attn.in_proj_weight"]
    for i, part in enumerate(("q_proj", "k_proj", "v_proj")):
        up, down = pairs[part]
        assert_close(fused[i * w : (i + 1) * w], old[i * w : (i + 1) * w] + 0.6 * 0.5 * up @ down)
    out = "model.transformer.resblocks.1.attn.out_proj.weight"
    assert_close(param(model, "text_encoder_1", out), before[te2 + out] + 0.6 * 0.5 * pairs["out_proj"][0] @ pairs["out_proj"][1])
    c_fc = "model.transformer.resblocks.2.mlp.c_fc.weight"
    assert_close(param(model, "text_encoder_1", c_fc), before[te2 + c_fc] + 0.6 * 1.0 * fc1[0] @ fc1[1])
    # only k: rows 16:32 change, q and v rows stay bit-identical; diff_b lands on in_proj_bias rows
    w0 = param(model, "text_encoder_1", "model.transformer.resblocks.0.attn.in_proj_weight")
    w0_old = before[te2 + "model.transformer.resblocks.0.attn.in_proj_weight"]
    assert torch.equal(w0[:w], w0_old[:w]) and torch.equal(w0[2 * w :], w0_old[2 * w :])
    assert_close(w0[w : 2 * w], w0_old[w : 2 * w] + 0.6 * 1.0 * k_only[0] @ k_only[1])
    b0 = param(model, "text_encoder_1", "model.transformer.resblocks.0.attn.in_proj_bias")
    b0_old = before[te2 + "model.transformer.resblocks.0.attn.in_proj_bias"]
    assert torch.equal(b0[:w], b0_old[:w]) and torch.equal(b0[2 * w :], b0_old[2 * w :])
    assert_close(b0[w : 2 * w], b0_old[w : 2 * w] + 0.6 * bias)
    v1 = "transformer.text_model.encoder.layers.1.self_attn.v_proj.weight"
    assert_close(param(model, "text_encoder_0", v1), before["text_encoder_0." + v1] + 0.6 * te1[0] @ te1[1])
    for name, (up, down) in {
        "input_blocks.4.1.transformer_blocks.1.attn2.to_k.weight": attn,
        "output_blocks.2.2.conv.weight": up_conv,
        "label_emb.0.0.weight": label,
    }.items():
        want = torch.einsum("or,ri...->oi...", up.flatten(1), down)
        assert_close(param(model, "unet", name), before["unet." + name] + 1.2 * 1.0 * want)


def test_sd2_single_text_encoder_is_openclip():
    model = tiny_model("sd2")
    g = torch.Generator().manual_seed(6)
    up, down = lora_pair(g, 24, 24, rank=2)
    sd = kohya("lora_te_text_model_encoder_layers_2_self_attn_v_proj", up, down, alpha=2.0)
    before = snapshot(model)
    apply(model, lora_from_tensors(sd, model.targets, "sd2"))
    key = "model.transformer.resblocks.2.attn.in_proj_weight"
    got, old = param(model, "text_encoder_0", key), before["text_encoder_0." + key]
    assert torch.equal(got[:48], old[:48])
    assert_close(got[48:], old[48:] + up @ down)


@cache
def _diffusers_converters():
    from diffusers.loaders.lora_conversion_utils import (
        _convert_non_diffusers_lora_to_diffusers,
        _maybe_map_sgm_blocks_to_diffusers,
    )
    from diffusers.utils import convert_unet_state_dict_to_peft

    return _convert_non_diffusers_lora_to_diffusers, _maybe_map_sgm_blocks_to_diffusers, convert_unet_state_dict_to_peft


def _sd1_kohya(alpha: float | None) -> dict[str, Tensor]:
    g = torch.Generator().manual_seed(7)
    sd: dict[str, Tensor] = {}
    for name, out, inp, k in [
        ("down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q", 32, 32, None),
        ("down_blocks_1_attentions_1_transformer_blocks_0_attn2_to_out_0", 64, 64, None),
        ("up_blocks_1_attentions_2_transformer_blocks_0_ff_net_0_proj", 256, 32, None),
        ("mid_block_attentions_0_proj_in", 64, 64, 1),
        ("down_blocks_0_resnets_1_conv1", 32, 32, 3),
        ("up_blocks_0_resnets_2_conv_shortcut", 64, 96, 1),
        ("mid_block_resnets_1_time_emb_proj", 64, 128, None),
        ("up_blocks_0_upsamplers_0_conv", 64, 64, 3),
    ]:
        sd |= kohya("lora_unet_" + name, *lora_pair(g, out, inp, kernel=k), alpha=alpha)
    for name, out, inp in [("layers_0_self_attn_k_proj", 24, 24), ("layers_1_mlp_fc1", 48, 24)]:
        sd |= kohya("lora_te_text_model_encoder_" + name, *lora_pair(g, out, inp), alpha=alpha)
    return sd


def _same_patches(a: LoraPatchSet, b: LoraPatchSet) -> None:
    """Both sets patch the same parameters with equal deltas."""
    from huihua.adapters.lora import patch_delta

    da = {(p.target.component, p.target.param, p.target.rows): patch_delta(p) for p in a.patches}
    db = {(p.target.component, p.target.param, p.target.rows): patch_delta(p) for p in b.patches}
    assert sorted(da) == sorted(db)
    for key, value in da.items():
        assert_close(db[key], value)


def test_sd1_names_agree_with_diffusers_conversion():
    to_diffusers, _, to_peft = _diffusers_converters()
    model = tiny_model("sd1")
    # Old diffusers layout (processor.to_q_lora, lora.down, lora_linear_layer): alpha = rank.
    plain = _sd1_kohya(alpha=None)
    ours = lora_from_tensors(plain, model.targets, "kohya")
    converted, alphas = to_diffusers(dict(plain))
    assert not alphas
    _same_patches(ours, lora_from_tensors(converted, model.targets, "diffusers"))
    # attention-processor files saved by old diffusers carry no "unet." prefix
    bare = {k.removeprefix("unet."): v for k, v in converted.items()}
    _same_patches(ours, lora_from_tensors(bare, model.targets, "attn_procs"))
    # PEFT layout (lora_A / lora_B) with diffusers' LoRA metadata carrying lora_alpha.
    scaled = _sd1_kohya(alpha=2.0)
    ours = lora_from_tensors(scaled, model.targets, "kohya")
    converted, _ = to_diffusers(dict(scaled))
    unet = {k[len("unet."):]: v for k, v in converted.items() if k.startswith("unet.")}
    peft = {"unet." + k: v for k, v in to_peft(unet).items()}
    peft |= {k: v for k, v in converted.items() if k.startswith("text_encoder.")}
    te_alpha = {f"text_encoder.{k}.alpha": torch.tensor(2.0) for k in
                ("text_model.encoder.layers.0.self_attn.k_proj", "text_model.encoder.layers.1.mlp.fc1")}
    meta = {"lora_adapter_metadata": json.dumps({"unet.r": 4, "unet.lora_alpha": 2.0})}
    _same_patches(ours, lora_from_tensors(peft | te_alpha, model.targets, "peft", metadata=meta))


def test_sdxl_ldm_names_agree_with_diffusers_sgm_mapping():
    to_diffusers, map_sgm, _ = _diffusers_converters()
    model = tiny_model("sdxl")
    g = torch.Generator().manual_seed(8)
    sd: dict[str, Tensor] = {}
    for name, out, inp, k in [
        ("input_blocks_4_1_transformer_blocks_1_attn1_to_v", 64, 64, None),
        ("input_blocks_5_0_in_layers_2", 64, 64, 3),
        ("input_blocks_3_0_op", 32, 32, 3),
        ("middle_block_1_proj_out", 64, 64, None),
        ("middle_block_2_emb_layers_1", 64, 128, None),
        ("output_blocks_1_1_transformer_blocks_0_ff_net_2", 64, 256, None),
        ("output_blocks_2_2_conv", 64, 64, 3),
        ("output_blocks_4_0_skip_connection", 32, 64, 1),
    ]:
        sd |= kohya("lora_unet_" + name, *lora_pair(g, out, inp, kernel=k))
    ours = lora_from_tensors(sd, model.targets, "ldm-names")
    remapped = map_sgm(dict(sd), SimpleNamespace(layers_per_block=model.spec.unet.num_res_blocks))
    converted, _ = to_diffusers(remapped)
    _same_patches(ours, lora_from_tensors(converted, model.targets, "diffusers"))


# ---------------------------------------------------------------------------------------------
# refusals


@cache
def full_size_targets(family: str) -> LoraTargets:
    """Targets of a full-size SD1 or SDXL model built on the meta device (names and shapes only)."""
    if family == "sd1":
        cfg = UNetConfig()
        texts = (CLIPTextConfig(),)
    else:
        cfg = UNetConfig(channel_mult=(1, 2, 4), transformer_depth=(0, 2, 10), transformer_depth_middle=10,
                         num_heads=None, num_head_channels=64, context_dim=2048, use_linear_in_transformer=True,
                         adm_in_channels=2816)
        texts = (CLIPTextConfig(), CLIPTextConfig(layout="openclip", width=1280, layers=32, heads=20,
                                                  intermediate=5120, act="gelu", projection_dim=1280, pad_token=0))
    with torch.device("meta"):
        unet = UNetModel(cfg)
        encoders = tuple(build_text_encoder(c) for c in texts)
    uses = tuple(TextEncoderUse(c, f"p{i}.") for i, c in enumerate(texts))
    return build_targets(ModelSpec(family, cfg, VAEConfig(), uses), unet, encoders)  # type: ignore[arg-type]


def test_full_size_names_resolve():
    sd1, xl = full_size_targets("sd1"), full_size_targets("sdxl")
    assert sd1.lookup("unet", "up_blocks_3_attentions_2_transformer_blocks_0_ff_net_2").weight.param == \
        "output_blocks.11.1.transformer_blocks.0.ff.net.2.weight"
    assert sd1.lookup("unet", "down_blocks_2_resnets_1_time_emb_proj").weight.param == "input_blocks.8.0.emb_layers.1.weight"
    assert xl.lookup("unet", "input_blocks_7_1_transformer_blocks_9_attn1_to_out_0").weight.shape == (1280, 1280)
    assert xl.lookup("unet", "down_blocks_2_attentions_1_transformer_blocks_9_attn1_to_out_0").weight.param == \
        "input_blocks.8.1.transformer_blocks.9.attn1.to_out.0.weight"
    fc2 = xl.lookup("te2", "text_model_encoder_layers_31_mlp_fc2").weight
    assert (fc2.component, fc2.param, fc2.shape) == ("text_encoder_1", "model.transformer.resblocks.31.mlp.c_proj.weight", (1280, 5120))
    v = xl.lookup("te2", "text_model.encoder.layers.0.self_attn.v_proj").weight
    assert (v.param, v.rows) == ("model.transformer.resblocks.0.attn.in_proj_weight", (2560, 3840))
    proj = xl.lookup("te2", "text_projection").weight
    assert proj.transposed and proj.param == "model.text_projection"


def test_sdxl_lora_on_sd1_is_refused_naming_what_did_not_fit():
    g = torch.Generator().manual_seed(9)
    # Rank-1 factors with SDXL's real widths: to_k reads 2048-wide context (SD1: 768).
    sd = kohya("lora_unet_input_blocks_4_1_transformer_blocks_0_attn2_to_k", *lora_pair(g, 640, 2048, rank=1))
    sd |= kohya("lora_te2_text_model_encoder_layers_0_self_attn_q_proj", *lora_pair(g, 1280, 1280, rank=1))
    meta = {"ss_base_model_version": "sdxl_base_v1-0"}
    assert lora_from_tensors(sd, full_size_targets("sdxl"), "xl_style", metadata=meta).components() == \
        {"unet", "text_encoder_1"}
    with pytest.raises(CheckpointError) as err:
        lora_from_tensors(sd, full_size_targets("sd1"), "xl_style", "/loras/xl_style.safetensors", meta)
    msg = str(err.value)
    assert "xl_style" in msg and "sd1" in msg and "sdxl_base_v1-0" in msg
    assert "lora_te2_text_model_encoder_layers_0_self_attn_q_proj" in msg and "two text encoders" in msg
    assert "input_blocks_4_1_transformer_blocks_0_attn2_to_k" in msg and "2048" in msg and "768" in msg


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        ({"lora_unet_down_blocks_9_attentions_0_proj_in.lora_up.weight": torch.zeros(32, 1),
          "lora_unet_down_blocks_9_attentions_0_proj_in.lora_down.weight": torch.zeros(1, 32)},
         "lora_unet_down_blocks_9_attentions_0_proj_in"),
        ({"lora_unet_conv_in.weird_tensor": torch.zeros(1)}, "lora_unet_conv_in.weird_tensor"),
        ({"lora_unet_conv_out.lora_up.weight": torch.zeros(4, 1, 1, 1)}, "only one of its up/down"),
        ({"lora_unet_conv_in.lora_up.weight": torch.zeros(32, 1, 1, 1),
          "lora_unet_conv_in.lora_down.weight": torch.zeros(1, 4, 3, 3),
          "lora_unet_conv_in.dora_scale": torch.zeros(32, 1, 1, 1)}, "DoRA"),
        ({"lora_te1_text_model_encoder_layers_0_mlp_fc1.lora_up.weight": torch.zeros(48, 1),
          "lora_te1_text_model_encoder_layers_0_mlp_fc1.lora_down.weight": torch.zeros(1, 24)}, "two text encoders"),
        ({"lora_unet_conv_in.diff_b": torch.zeros(5)}, "diff_b"),
    ],
)
def test_keys_that_fit_nothing_are_errors(extra, needle):
    model = tiny_model("sd1")
    good = kohya("lora_unet_conv_in", torch.zeros(32, 1, 1, 1), torch.zeros(1, 4, 3, 3))
    lora_from_tensors(good, model.targets, "ok")  # the good part alone loads
    with pytest.raises(CheckpointError) as err:
        lora_from_tensors(good | extra, model.targets, "bad")
    assert needle in str(err.value) and "bad" in str(err.value)


def test_sd1_lora_on_sdxl_is_refused():
    sd1, xl = tiny_model("sd1"), tiny_model("sdxl")
    sd = _sd1_kohya(alpha=1.0)
    lora_from_tensors(sd, sd1.targets, "sd1_lora")
    with pytest.raises(CheckpointError, match="single text encoder"):
        lora_from_tensors(sd, xl.targets, "sd1_lora")


# ---------------------------------------------------------------------------------------------
# files


class _NotATensor:
    pass


def test_load_lora_from_safetensors_and_pickle(tmp_path):
    model = tiny_model("sd1")
    sd = _sd1_kohya(alpha=2.0)
    save_file(sd, str(tmp_path / "style.safetensors"), metadata={"ss_output_name": "style"})
    torch.save(sd, tmp_path / "style_pt.pt")
    a = load_lora(tmp_path / "style.safetensors", model.targets)
    b = load_lora(tmp_path / "style_pt.pt", model.targets)
    assert a.name == "style" and a.metadata["ss_output_name"] == "style" and b.name == "style_pt"
    _same_patches(a, b)
    bundled = torch.randn(2, 24)
    save_file(sd | {"bundle_emb.inkstyle.string_to_param.*": bundled}, str(tmp_path / "bundle.safetensors"))
    (emb,) = load_lora(tmp_path / "bundle.safetensors", model.targets).embeddings
    assert emb.name == "inkstyle" and torch.equal(emb.vectors["*"], bundled)
    torch.save({**sd, "evil": _NotATensor()}, tmp_path / "evil.pt")
    with pytest.raises(UnsafePickleError):
        load_lora(tmp_path / "evil.pt", model.targets)


def test_find_and_list_files(tmp_path):
    (tmp_path / "a" / "sub").mkdir(parents=True)
    (tmp_path / "b").mkdir()
    for rel in ("a/Detail.safetensors", "a/sub/ink.pt", "a/notes.txt", "b/detail.safetensors", "b/ink.ckpt"):
        (tmp_path / rel).write_bytes(b"x")
    dirs = [tmp_path / "a", tmp_path / "b"]
    listed = [p.relative_to(tmp_path).as_posix() for p in list_files(dirs, LORA_EXTENSIONS)]
    assert listed == ["a/Detail.safetensors", "a/sub/ink.pt", "b/detail.safetensors", "b/ink.ckpt"]
    assert [p.name for p in list_files(dirs, EMBEDDING_EXTENSIONS)] == ["Detail.safetensors", "ink.pt", "detail.safetensors"]
    assert find_file("detail", dirs, LORA_EXTENSIONS) == tmp_path / "b/detail.safetensors"  # exact case first
    assert find_file("DETAIL", dirs, LORA_EXTENSIONS) == tmp_path / "a/Detail.safetensors"
    assert find_file("ink", dirs, LORA_EXTENSIONS) == tmp_path / "a/sub/ink.pt"  # folder order
    assert find_file("sub/ink", dirs, LORA_EXTENSIONS) == tmp_path / "a/sub/ink.pt"
    assert find_file("ink.ckpt", dirs, LORA_EXTENSIONS) == tmp_path / "a/sub/ink.pt"  # extension ignored
    with pytest.raises(PromptError, match="'missing' not found"):
        find_file("missing", dirs, LORA_EXTENSIONS)
    with pytest.raises(ParameterError, match="not a folder"):
        list_files([tmp_path / "nope"], LORA_EXTENSIONS)


def test_a1111_hashes(tmp_path):
    tensors = {"x.lora_up.weight": torch.arange(6.0).reshape(3, 2), "x.lora_down.weight": torch.ones(2, 3)}
    one, two = tmp_path / "one.safetensors", tmp_path / "two.safetensors"
    save_file(tensors, str(one), metadata={"note": "a"})
    save_file(tensors, str(two), metadata={"note": "a much longer note"})
    data = one.read_bytes()
    (header_len,) = struct.unpack("<Q", data[:8])
    hashes = FileHashes()
    # addnet hash: sha256 of the tensor bytes after the header, so metadata edits do not change it
    assert hashes.addnet_sha256(one) == hashlib.sha256(data[8 + header_len :]).hexdigest() == hashes.addnet_sha256(two)
    assert hashes.sha256(one) == hashlib.sha256(data).hexdigest() != hashes.sha256(two)
    assert hashes.lora_short_hash(one) == hashes.addnet_sha256(one)[:12]
    assert hashes.lora_short_hash(one, {"sshs_model_hash": "abcdef0123456789"}) == "abcdef012345"
    pt = tmp_path / "three.pt"
    torch.save(tensors, pt)
    assert hashes.lora_short_hash(pt) == hashlib.sha256(pt.read_bytes()).hexdigest()[:12]
    assert hashes.embedding_short_hash(one) == hashlib.sha256(data).hexdigest()[:12]
    # cached per (path, mtime, size): same size and mtime -> the cached digest; new mtime -> recomputed
    st = one.stat()
    one.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    os.utime(one, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert hashes.sha256(one) == hashlib.sha256(data).hexdigest()
    os.utime(one, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert hashes.sha256(one) == hashlib.sha256(one.read_bytes()).hexdigest() != hashlib.sha256(data).hexdigest()
    assert hashes_field([("a:b,c", "123"), ("d", "456"), ("a:b,c", "789")]) == "abc: 123, d: 456"
