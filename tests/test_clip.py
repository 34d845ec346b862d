"""CLIP text encoders against transformers' CLIPTextModel(+WithProjection), and the key conversion.

Parity tolerance (fp32): max|ours - ref| <= 1e-4 * max(1, max|ref|).
"""

from __future__ import annotations

import pytest
import torch

from huihua.checkpoints.diffusers.clip import hf_clip_to_ldm, ldm_clip_to_hf
from huihua.nn.configs import CLIPTextConfig
from huihua.errors import CheckpointError, ParameterError
from huihua.nn.clip import CLIPTextEncoder, build_text_encoder

transformers = pytest.importorskip("transformers")

WIDTH, LAYERS, HEADS, INTERMEDIATE, PROJECTION = 32, 3, 4, 64, 24
BOS, EOS = 49406, 49407


def assert_close(ours: torch.Tensor, ref: torch.Tensor) -> None:
    assert ours.shape == ref.shape
    err = (ours - ref).abs().max().item()
    assert err <= 1e-4 * max(1.0, ref.abs().max().item()), err


def _ours_config(layout: str, act: str, projection: int | None = None) -> CLIPTextConfig:
    return CLIPTextConfig(
        layout=layout, width=WIDTH, layers=LAYERS, heads=HEADS, intermediate=INTERMEDIATE,
        act=act, projection_dim=projection,
    )


def _reference(act: str, projection: int | None = None, seed: int = 0) -> torch.nn.Module:
    """A tiny random transformers CLIP text model; every parameter (LayerNorms too) is perturbed."""
    cfg = transformers.CLIPTextConfig(
        vocab_size=49408, hidden_size=WIDTH, intermediate_size=INTERMEDIATE, num_hidden_layers=LAYERS,
        num_attention_heads=HEADS, max_position_embeddings=77, hidden_act=act, layer_norm_eps=1e-5,
        bos_token_id=BOS, eos_token_id=EOS, pad_token_id=EOS, projection_dim=projection or 512,
    )
    torch.manual_seed(seed)
    cls = transformers.CLIPTextModelWithProjection if projection else transformers.CLIPTextModel
    model = cls(cfg).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return model


def _tokens(length: int, pad: int, seed: int = 1) -> torch.Tensor:
    """Two windows, [bos, words..., eos, pad...], of different text lengths (EOS is the largest id)."""
    g = torch.Generator().manual_seed(seed)
    rows = []
    for n_words in (5, length - 2):
        words = torch.randint(0, BOS, (n_words,), generator=g).tolist()
        row = [BOS, *words, EOS]
        rows.append(row + [pad] * (length - len(row)))
    return torch.tensor(rows)


def _convert_and_load(ref: torch.nn.Module, layout: str, act: str, projection: int | None) -> CLIPTextEncoder:
    ours = build_text_encoder(_ours_config(layout, act, projection)).eval()
    ours.load_state_dict(hf_clip_to_ldm(ref.state_dict(), layout), strict=True)
    return ours


def _check_all_layers(ours: CLIPTextEncoder, ref: torch.nn.Module, tokens: torch.Tensor) -> dict:
    with torch.no_grad():
        out = ref(input_ids=tokens, output_hidden_states=True)
        final_norm = ref.text_model.final_layer_norm if hasattr(ref, "text_model") else ref.final_layer_norm
        for layer in range(-LAYERS, 0):
            ref_hidden = out.hidden_states[LAYERS + 1 + layer]  # [0] is the embeddings
            raw = ours(tokens, layer=layer, final_norm=False)
            normed = ours(tokens, layer=layer, final_norm=True)
            assert_close(raw.hidden, ref_hidden)
            assert_close(normed.hidden, final_norm(ref_hidden))
        assert_close(ours(tokens).hidden, out.last_hidden_state)
    return out


@pytest.mark.parametrize("length", [77, 12])
def test_hf_layout_matches_clip_text_model(length: int) -> None:
    ref = _reference("quick_gelu")
    ours = _convert_and_load(ref, "hf", "quick_gelu", None)
    tokens = _tokens(length, pad=EOS)
    out = _check_all_layers(ours, ref, tokens)
    with torch.no_grad():
        for layer in (-1, -2):
            for final_norm in (True, False):
                assert_close(ours(tokens, layer=layer, final_norm=final_norm).pooled, out.pooler_output)


def test_hf_layout_with_projection_matches() -> None:
    ref = _reference("quick_gelu", projection=PROJECTION)
    ours = _convert_and_load(ref, "hf", "quick_gelu", PROJECTION)
    tokens = _tokens(77, pad=EOS)
    out = _check_all_layers(ours, ref, tokens)
    with torch.no_grad():
        assert_close(ours(tokens, layer=-2).pooled, out.text_embeds)


def test_openclip_layout_matches_gelu_model() -> None:
    """SD2's tower: exact GELU, fused in_proj, padding with 0 (EOS is still the argmax)."""
    ref = _reference("gelu", seed=3)
    ours = _convert_and_load(ref, "openclip", "gelu", None)
    tokens = _tokens(77, pad=0, seed=4)
    out = _check_all_layers(ours, ref, tokens)
    with torch.no_grad():
        assert_close(ours(tokens, layer=-2, final_norm=False).pooled, out.pooler_output)


def test_openclip_layout_with_projection_matches_text_embeds() -> None:
    """SDXL bigG's case: pooled = ln_final(last)[eos] @ text_projection == text_embeds."""
    ref = _reference("gelu", projection=PROJECTION, seed=5)
    ours = _convert_and_load(ref, "openclip", "gelu", PROJECTION)
    assert ours.model.text_projection.shape == (WIDTH, PROJECTION)
    tokens = _tokens(77, pad=0, seed=6)
    out = _check_all_layers(ours, ref, tokens)
    with torch.no_grad():
        got = ours(tokens, layer=-2, final_norm=False)
        assert got.pooled.shape == (2, PROJECTION)
        assert_close(got.pooled, out.text_embeds)


def test_want_pooled_false_stops_early_and_keeps_hidden() -> None:
    ref = _reference("gelu", projection=PROJECTION, seed=7)
    ours = _convert_and_load(ref, "openclip", "gelu", PROJECTION)
    calls: list[int] = []
    ours.model.transformer.resblocks[-1].register_forward_hook(lambda *_: calls.append(1))
    tokens = _tokens(20, pad=0)
    with torch.no_grad():
        full = ours(tokens, layer=-2, final_norm=False)
        assert len(calls) == 1
        short = ours(tokens, layer=-2, final_norm=False, want_pooled=False)
    assert len(calls) == 1  # the last block did not run
    assert short.pooled is None
    assert torch.equal(short.hidden, full.hidden)


def test_bad_inputs_raise() -> None:
    ours = build_text_encoder(_ours_config("hf", "quick_gelu"))
    tokens = _tokens(10, pad=EOS)
    for layer in (0, -LAYERS - 1, 1):
        with pytest.raises(ParameterError):
            ours(tokens, layer=layer)
    with pytest.raises(ParameterError):
        ours(torch.zeros(1, 78, dtype=torch.long))
    with pytest.raises(ParameterError):
        ours(tokens.float())
    with pytest.raises(ParameterError):
        build_text_encoder(CLIPTextConfig(layout="bad"))  # type: ignore[arg-type]


@pytest.mark.parametrize("layout", ["hf", "openclip"])
@pytest.mark.parametrize("projection", [None, PROJECTION])
def test_key_conversion_round_trip(layout: str, projection: int | None) -> None:
    ref = _reference("gelu", projection=projection, seed=8)
    sd = ref.state_dict()
    # Files on disk (diffusers folders) carry "text_model."; a bare v5 CLIPTextModel does not.
    canonical = {k if k.startswith(("text_model.", "text_projection")) else "text_model." + k: v for k, v in sd.items()}
    ldm = hf_clip_to_ldm(sd, layout)
    ldm_from_file = hf_clip_to_ldm({**canonical, "text_model.embeddings.position_ids": torch.arange(77)[None]}, layout)
    assert ldm.keys() == ldm_from_file.keys()
    assert ldm.keys() == build_text_encoder(_ours_config(layout, "gelu", projection)).state_dict().keys()
    back = ldm_clip_to_hf(ldm, layout)
    assert back.keys() == canonical.keys()
    for key, value in canonical.items():
        assert torch.equal(back[key], value), key
    if layout == "openclip":
        w = canonical["text_model.encoder.layers.1.self_attn.k_proj.weight"]
        assert torch.equal(ldm["model.transformer.resblocks.1.attn.in_proj_weight"][WIDTH : 2 * WIDTH], w)


def test_key_conversion_rejects_unknown_keys() -> None:
    with pytest.raises(CheckpointError):
        hf_clip_to_ldm({"vision_model.embeddings.patch_embedding.weight": torch.zeros(1)}, "hf")
    with pytest.raises(CheckpointError):
        hf_clip_to_ldm({"text_model.encoder.layers.0.self_attn.q_proj.weight": torch.zeros(2, 2)}, "openclip")
    with pytest.raises(CheckpointError):
        ldm_clip_to_hf({"model.transformer.resblocks.0.attn.weird": torch.zeros(1)}, "openclip")
    assert ldm_clip_to_hf({"model.logit_scale": torch.zeros(())}, "openclip") == {}


def _expected_hf_keys(layers: int, projection: bool) -> set[str]:
    tm = "transformer.text_model."
    keys = {tm + "embeddings.token_embedding.weight", tm + "embeddings.position_embedding.weight"}
    for i in range(layers):
        for sub in ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.out_proj",
                    "layer_norm1", "layer_norm2", "mlp.fc1", "mlp.fc2"):
            keys |= {f"{tm}encoder.layers.{i}.{sub}.weight", f"{tm}encoder.layers.{i}.{sub}.bias"}
    keys |= {tm + "final_layer_norm.weight", tm + "final_layer_norm.bias"}
    return keys | ({"transformer.text_projection.weight"} if projection else set())


def _expected_openclip_keys(layers: int, projection: bool) -> set[str]:
    keys = {"model.token_embedding.weight", "model.positional_embedding", "model.ln_final.weight", "model.ln_final.bias"}
    for i in range(layers):
        block = f"model.transformer.resblocks.{i}."
        keys |= {block + "attn.in_proj_weight", block + "attn.in_proj_bias"}
        for sub in ("attn.out_proj", "ln_1", "ln_2", "mlp.c_fc", "mlp.c_proj"):
            keys |= {f"{block}{sub}.weight", f"{block}{sub}.bias"}
    return keys | ({"model.text_projection"} if projection else set())


@pytest.mark.parametrize(
    "cfg, expected, shapes",
    [
        (CLIPTextConfig(), _expected_hf_keys(12, False),
         {"transformer.text_model.encoder.layers.11.mlp.fc1.weight": (3072, 768)}),
        (CLIPTextConfig(layout="openclip", width=1024, layers=24, heads=16, intermediate=4096, act="gelu", pad_token=0),
         _expected_openclip_keys(24, False),
         {"model.transformer.resblocks.23.attn.in_proj_weight": (3072, 1024), "model.positional_embedding": (77, 1024)}),
        (CLIPTextConfig(layout="openclip", width=1280, layers=32, heads=20, intermediate=5120, act="gelu",
                        projection_dim=1280, pad_token=0),
         _expected_openclip_keys(32, True),
         {"model.text_projection": (1280, 1280), "model.transformer.resblocks.31.mlp.c_fc.weight": (5120, 1280)}),
    ],
    ids=["vit-l", "vit-h", "bigg"],
)
def test_real_sizes_on_meta_device(cfg: CLIPTextConfig, expected: set[str], shapes: dict) -> None:
    with torch.device("meta"):
        module = build_text_encoder(cfg)
    sd = module.state_dict()
    assert set(sd) == expected
    assert list(module.buffers()) == []
    assert all(t.is_meta for t in sd.values())
    for key, shape in shapes.items():
        assert tuple(sd[key].shape) == shape
    if cfg.layout == "hf":  # transformers' CLIPTextModel for openai/clip-vit-large-patch14: 123,060,480
        assert sum(t.numel() for t in sd.values()) == 123_060_480


def test_meta_built_module_runs_after_streaming_weights() -> None:
    """Nothing outside the state dict is needed: assign weights into a meta-built module and run it."""
    ref = _reference("quick_gelu", seed=9)
    with torch.device("meta"):
        ours = build_text_encoder(_ours_config("hf", "quick_gelu"))
    ours.load_state_dict(hf_clip_to_ldm(ref.state_dict(), "hf"), strict=True, assign=True)
    tokens = _tokens(77, pad=EOS)
    with torch.no_grad():
        assert_close(ours(tokens).pooled, ref(input_ids=tokens).pooler_output)


def test_embedding_overrides_replace_token_embeddings_before_positions() -> None:
    """Textual inversion hook: overriding positions with the tokens' own embeddings changes nothing,
    other vectors change exactly the hidden states from those positions on (causal attention)."""
    from huihua.nn.configs import CLIPTextConfig
    from huihua.nn.clip import build_text_encoder

    torch.manual_seed(0)
    for layout in ("hf", "openclip"):
        enc = build_text_encoder(CLIPTextConfig(layout=layout, width=16, layers=2, heads=2, intermediate=32,
                                                act="gelu")).eval()
        with torch.no_grad():
            for p in enc.parameters():
                p.normal_(0, 0.2)
            tokens = torch.tensor([[49406, 320, 1125, 539, 49407] + [49407] * 72])
            base = enc(tokens).hidden
            own = enc.token_embedding()(tokens[0, 2:4])
            same = enc(tokens, embedding_overrides=[[(2, own)]]).hidden
            assert torch.equal(base, same)
            other = enc(tokens, embedding_overrides=[[(2, torch.ones(2, 16))]]).hidden
        assert torch.equal(other[:, :2], base[:, :2])
        assert (other[:, 2:] - base[:, 2:]).abs().amax(dim=-1).min() > 1e-4
