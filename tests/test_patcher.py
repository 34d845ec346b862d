"""WeightPatcher: LoRAs added in place and the original weights restored bit-identically.

Restores are checked with ``torch.equal`` (exact); merged values with 1e-5 absolute (fp32) or
exactly against ``(W.float() + delta).to(dtype)`` for half-precision modules (one rounding).
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from torch import Tensor

from huihua.adapters.lora import LoraPatchSet, lora_from_tensors, patch_delta
from huihua.errors import CheckpointError
from huihua.adapters.patcher import LoraUse, WeightPatcher
from tests.test_lora import TinyModel, assert_close, components, kohya, lora_pair, snapshot, tiny_model
from tests.tiny_models import tiny_unet_inputs

Q = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q"
Q_PARAM = "input_blocks.1.1.transformer_blocks.0.attn1.to_q.weight"


def two_loras(model: TinyModel, seed: int = 0) -> tuple[LoraPatchSet, LoraPatchSet]:
    """A: to_q + a 3x3 conv + a text-encoder q_proj; B: to_q (overlapping A) + to_v."""
    g = torch.Generator().manual_seed(seed)
    a = kohya(Q, *lora_pair(g, 32, 32), alpha=2.0)
    a |= kohya("lora_unet_down_blocks_1_resnets_1_conv2", *lora_pair(g, 64, 64, kernel=3), alpha=1.0)
    a |= kohya("lora_te_text_model_encoder_layers_1_self_attn_q_proj", *lora_pair(g, 24, 24), alpha=4.0)
    b = kohya(Q, *lora_pair(g, 32, 32, rank=2), alpha=1.0)
    b |= kohya("lora_unet_up_blocks_0_attentions_2_transformer_blocks_0_attn2_to_v", *lora_pair(g, 64, 24), alpha=4.0)
    return lora_from_tensors(a, model.targets, "a"), lora_from_tensors(b, model.targets, "b")


def assert_identical(model: TinyModel, before: dict[str, Tensor]) -> None:
    now = snapshot(model)
    assert now.keys() == before.keys()
    changed = [k for k in before if not torch.equal(now[k], before[k])]
    assert not changed, f"not restored: {changed[:3]}"


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_stacked_loras_then_bit_identical_restore(dtype):
    model = tiny_model("sd1", dtype=dtype)
    a, b = two_loras(model)
    before = snapshot(model)
    patcher = WeightPatcher(components(model))
    patcher.apply([LoraUse(a, te_weight=0.5, unet_weight=1.0), LoraUse(b, unet_weight=-0.75)])
    assert patcher.patched_parameters == 4  # to_q once although two LoRAs touch it; no other copies
    d_a = next(p for p in a.patches if p.target.param == Q_PARAM)
    d_b = next(p for p in b.patches if p.target.param == Q_PARAM)
    want = before["unet." + Q_PARAM].float() + patch_delta(d_a) - 0.75 * patch_delta(d_b)
    got = model.unet.get_parameter(Q_PARAM).detach()
    assert got.dtype == dtype
    if dtype == torch.float32:
        assert_close(got, want)
    else:
        assert torch.equal(got, want.to(dtype))  # summed in fp32, rounded once
    assert not torch.equal(got, before["unet." + Q_PARAM])
    patcher.restore()
    assert patcher.applied == () and patcher.patched_parameters == 0
    assert_identical(model, before)


def test_switching_restores_first_and_same_list_is_a_no_op():
    model = tiny_model("sd1")
    a, b = two_loras(model)
    before = snapshot(model)
    patcher = WeightPatcher(components(model))
    patcher.apply([LoraUse(b, 1.0, 0.6)])
    only_b = snapshot(model)
    patcher.restore()
    patcher.apply([LoraUse(a)])
    patcher.apply([LoraUse(b, 1.0, 0.6)])  # switch: A's changes are gone, B's are exact
    assert all(torch.equal(v, only_b[k]) for k, v in snapshot(model).items())
    stored = patcher._backup  # noqa: SLF001 - the same backups: nothing recomputed
    patcher.apply([LoraUse(b, 1.0, 0.6)])
    assert patcher._backup is stored and all(torch.equal(v, only_b[k]) for k, v in snapshot(model).items())
    patcher.apply([LoraUse(b, 1.0, 0.7)])  # another weight is another list
    assert not torch.equal(model.unet.get_parameter(Q_PARAM), only_b["unet." + Q_PARAM])
    patcher.apply([])
    assert_identical(model, before)


def test_zero_weight_leaves_a_component_untouched():
    model = tiny_model("sd1")
    a, _ = two_loras(model)
    before = snapshot(model)
    patcher = WeightPatcher(components(model))
    patcher.apply([LoraUse(a, te_weight=1.0, unet_weight=0.0)])
    assert patcher.patched_parameters == 1
    now = snapshot(model)
    assert all(torch.equal(now[k], v) for k, v in before.items() if k.startswith("unet."))
    te = "text_encoder_0.transformer.text_model.encoder.layers.1.self_attn.q_proj.weight"
    assert not torch.equal(now[te], before[te])
    patcher.restore()
    assert_identical(model, before)


def test_generation_changes_under_patch_and_returns_exactly_after():
    model = tiny_model("sd1")
    a, _ = two_loras(model)
    inputs = tiny_unet_inputs(model.spec.unet, batch=1, size=8)
    run = lambda: model.unet(inputs["x"], inputs["timesteps"], inputs["context"])  # noqa: E731
    with torch.inference_mode():
        reference = run()
        with WeightPatcher(components(model)) as patcher:
            with patcher.patched([LoraUse(a)]):
                patched = run()
            after = run()
    assert (patched - reference).abs().max() > 1e-3
    assert torch.equal(after, reference)


def test_context_manager_restores_on_error():
    model = tiny_model("sd1")
    a, b = two_loras(model)
    before = snapshot(model)
    patcher = WeightPatcher(components(model))
    with pytest.raises(RuntimeError, match="boom"):
        with patcher.patched([LoraUse(a), LoraUse(b)]):
            raise RuntimeError("boom")
    assert_identical(model, before)
    with pytest.raises(RuntimeError, match="boom"), patcher:
        patcher.apply([LoraUse(a)])
        raise RuntimeError("boom")
    assert_identical(model, before)


def test_missing_component_is_an_error_and_nothing_stays_patched():
    model = tiny_model("sd1")
    a, _ = two_loras(model)
    before = snapshot(model)
    patcher = WeightPatcher({"unet": model.unet})  # no text encoder
    with pytest.raises(CheckpointError, match="'a' patches text_encoder_0"):
        patcher.apply([LoraUse(a)])
    assert patcher.patched_parameters == 0
    assert_identical(model, before)


def test_for_engine_names_components_like_targets():
    model = tiny_model("sdxl")
    g = torch.Generator().manual_seed(3)
    sd = kohya("lora_te2_text_model_encoder_layers_0_self_attn_q_proj", *lora_pair(g, 16, 16))
    sd |= kohya("lora_te1_text_model_encoder_layers_0_self_attn_q_proj", *lora_pair(g, 8, 8))
    patches = lora_from_tensors(sd, model.targets, "xl")
    engine = SimpleNamespace(unet=model.unet, text_encoders=model.text_encoders)
    before = snapshot(model)
    patcher = WeightPatcher.for_model(engine, backup_device="cpu")  # type: ignore[arg-type]
    patcher.apply([LoraUse(patches)])
    now = snapshot(model)
    changed = sorted(k for k in before if not torch.equal(now[k], before[k]))
    assert changed == ["text_encoder_0.transformer.text_model.encoder.layers.0.self_attn.q_proj.weight",
                       "text_encoder_1.model.transformer.resblocks.0.attn.in_proj_weight"]
    patcher.restore()
    assert_identical(model, before)


def test_folder_networks_activate_apply_and_restore(tmp_path):
    from safetensors.torch import save_file

    from huihua.adapters.lora_networks import FolderNetworks
    from huihua.checkpoints.tokenizer import CLIPTokenizer
    from huihua.errors import PromptError
    from huihua.prompts.extra_networks import parse_extra_networks

    model = tiny_model("sd1")
    model.tokenizer, model.device = CLIPTokenizer.default(), torch.device("cpu")
    (tmp_path / "loras" / "styles").mkdir(parents=True)
    (tmp_path / "emb").mkdir()
    g = torch.Generator().manual_seed(5)
    up, down = lora_pair(g, 32, 32)
    save_file(kohya(Q, up, down, alpha=2.0), str(tmp_path / "loras" / "styles" / "Ink.safetensors"))
    save_file({"emb_params": torch.randn(2, 24, generator=g)}, str(tmp_path / "emb" / "fuzzy.safetensors"))
    networks = FolderNetworks([tmp_path / "loras"], [tmp_path / "emb"], bundled=False)
    assert [p.name for p in networks.list_loras()] == ["Ink.safetensors"]
    assert [p.name for p in networks.list_embeddings()] == ["fuzzy.safetensors"]

    before = snapshot(model)
    _, calls = parse_extra_networks("a cat <lora:ink:0.5:-2> <lyco:styles/Ink:0.25>")
    with networks.activate(model, calls) as activation:  # type: ignore[arg-type]
        delta = 2.0 / 4 * up @ down
        assert_close(model.unet.get_parameter(Q_PARAM), before["unet." + Q_PARAM] + (-2 + 0.25) * delta)
        short = networks.hashes.lora_short_hash(tmp_path / "loras" / "styles" / "Ink.safetensors")
        assert activation.infotext == {"Lora hashes": f"ink: {short}, styles/Ink: {short}"}
        (lookup,) = activation.embeddings
        assert lookup.find_at(model.tokenizer.encode("fuzzy"), 0).vectors.shape == (2, 24)
    assert_identical(model, before)
    loaded = networks.lora(model, "ink")  # type: ignore[arg-type]
    assert networks.lora(model, "INK") is loaded  # read once per engine, then cached
    assert networks.embedding_hashes(["fuzzy", "unknown"]) == \
        f"fuzzy: {networks.hashes.embedding_short_hash(tmp_path / 'emb' / 'fuzzy.safetensors')}"
    for prompt, message in [("<lora:missing:1>", "'missing' not found"), ("<hypernet:x:1>", "unknown extra network")]:
        with pytest.raises(PromptError, match=message):
            with networks.activate(model, parse_extra_networks(prompt)[1]):  # type: ignore[arg-type]
                pass
    assert_identical(model, before)
