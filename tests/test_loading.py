"""Loading real files into our networks: parity with the reference implementations through a
single-file LDM safetensors and through a diffusers folder, for SD1, SD2, SDXL and inpainting.

Tolerance: max |ours - reference| <= 1e-4 * max(1, max |reference|), fp32.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

import huihua
from huihua.errors import CheckpointError
from tests.tiny_checkpoints import TinyReference, tiny_reference, write_diffusers_folder, write_single_file
from tests.tiny_models import assert_close, sdxl_label_vector, tiny_unet_inputs, tiny_vae_config

pytest.importorskip("diffusers")
pytest.importorskip("transformers")


def _tokens(batch: int = 2) -> torch.Tensor:
    gen = torch.Generator().manual_seed(3)
    ids = torch.randint(1, 49000, (batch, 77), generator=gen)
    ids[:, 0] = 49406
    for b, end in enumerate((9, 30, 50)[:batch]):
        ids[b, end:] = 49407  # SD1-style padding with the end token; argmax finds the first one
    return ids


@torch.no_grad()
def check_parity(engine, ref: TinyReference, text_layers_from_folder: bool = False) -> None:
    """Every network of ``engine`` computes what the reference networks compute."""
    inputs = tiny_unet_inputs(ref.unet_cfg)
    kwargs = {}
    y = None
    if ref.unet_cfg.adm_in_channels is not None:
        kwargs["added_cond_kwargs"] = {"text_embeds": inputs["text_embeds"], "time_ids": inputs["time_ids"]}
        y = sdxl_label_vector(ref.unet, inputs["text_embeds"], inputs["time_ids"])
    want = ref.unet(inputs["x"], inputs["timesteps"], inputs["context"], **kwargs).sample
    got = engine.unet(inputs["x"], inputs["timesteps"], inputs["context"], y=y)
    assert_close(got, want, "unet")

    pixels = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(1)) * 2 - 1
    assert_close(engine.vae.encode(pixels), ref.vae.encode(pixels).latent_dist.mean, "vae.encode")
    z = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(2))
    assert_close(engine.vae.decode(z), ref.vae.decode(z).sample, "vae.decode")

    tokens = _tokens()
    for i, (_, _, model) in enumerate(ref.texts):
        out = model(tokens, output_hidden_states=True)
        ours = engine.text_encoders[i]
        assert_close(ours(tokens, layer=-1, final_norm=True).hidden, out.last_hidden_state, f"text{i} last")
        assert_close(ours(tokens, layer=-2, final_norm=False).hidden, out.hidden_states[-2], f"text{i} penult")
        pooled = out.text_embeds if hasattr(out, "text_embeds") else out.pooler_output
        assert_close(ours(tokens).pooled, pooled, f"text{i} pooled")


FAMILIES = ["sd1", "sd2", "sdxl", "inpaint"]
EXPECTED_FAMILY = {"sd1": "sd1", "sd2": "sd2", "sdxl": "sdxl", "inpaint": "sd1"}


@pytest.mark.parametrize("family", FAMILIES)
def test_single_file_parity(tmp_path: Path, family: str) -> None:
    ref = tiny_reference(family)
    engine = huihua.load(write_single_file(ref, tmp_path / "m.safetensors"), device="cpu", dtype="fp32")
    assert engine.spec.family == EXPECTED_FAMILY[family]
    assert engine.spec.inpainting == (family == "inpaint")
    assert engine.spec.unet == ref.unet_cfg
    check_parity(engine, ref)


@pytest.mark.parametrize("family", FAMILIES)
def test_diffusers_folder_parity(tmp_path: Path, family: str) -> None:
    ref = tiny_reference(family)
    engine = huihua.load(write_diffusers_folder(ref, tmp_path / "pipe"), device="cpu", dtype="fp32")
    assert engine.spec.family == EXPECTED_FAMILY[family]
    assert engine.spec.unet == ref.unet_cfg
    check_parity(engine, ref)
    if family == "sd2":  # diffusers keeps SD2's tower cut at the penultimate layer: read its last one
        assert engine.spec.text_encoders[0].layer == -1


def test_fp16_file_loads_into_fp32(tmp_path: Path) -> None:
    ref = tiny_reference("sd1")
    engine = huihua.load(write_single_file(ref, tmp_path / "h.safetensors", dtype=torch.float16),
                         device="cpu", dtype="fp32")
    w = engine.unet.input_blocks[0][0].weight
    assert w.dtype == torch.float32
    assert torch.equal(w, ref.ldm_state_dict()["model.diffusion_model.input_blocks.0.0.weight"].half().float())


def test_bf16_target_dtype(tmp_path: Path) -> None:
    engine = huihua.load(write_single_file(tiny_reference("sd1"), tmp_path / "m.safetensors"),
                         device="cpu", dtype="bf16")
    assert {p.dtype for p in engine.unet.parameters()} == {torch.bfloat16}


def test_ema_and_extras_ignored_and_missing_tensor_named(tmp_path: Path) -> None:
    ref = tiny_reference("sd1")
    extra = {"model_ema.decay": torch.tensor(0.999), "model_ema.diffusion_modelout2weight": torch.zeros(3),
             "alphas_cumprod": torch.ones(1000), "cond_stage_model.transformer.text_model.embeddings.position_ids":
             torch.arange(77)[None]}
    engine = huihua.load(write_single_file(ref, tmp_path / "ema.safetensors", extra=extra), device="cpu", dtype="fp32")
    check_parity(engine, ref)

    sd = ref.ldm_state_dict()
    del sd["model.diffusion_model.out.2.bias"]
    path = tmp_path / "broken.safetensors"
    save_file(sd, str(path), metadata={"huihua.arch": __import__("json").dumps(ref.arch())})
    with pytest.raises(CheckpointError, match=r"broken\.safetensors: missing tensor 'model\.diffusion_model\.out\.2\.bias'"):
        huihua.load(path, device="cpu", dtype="fp32")


def test_separate_vae_replaces_the_checkpoint_vae(tmp_path: Path) -> None:
    from huihua.checkpoints.diffusers.vae import diffusers_vae_to_ldm
    from tests.tiny_models import tiny_diffusers_vae

    ref = tiny_reference("sd1", seed=0)
    other = tiny_diffusers_vae(tiny_vae_config(), seed=5)
    vae_sd = {k: v.contiguous() for k, v in diffusers_vae_to_ldm(other.state_dict(), tiny_vae_config()).items()}
    ckpt = write_single_file(ref, tmp_path / "m.safetensors")
    z = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        want = other.decode(z).sample
        # LDM layout without prefix (vae-ft-mse style), with prefix, and the diffusers layout all load.
        for name, sd in {"plain.safetensors": vae_sd,
                         "prefixed.safetensors": {"first_stage_model." + k: v for k, v in vae_sd.items()},
                         "diffusers.safetensors": {k: v.contiguous() for k, v in other.state_dict().items()}}.items():
            save_file(sd, str(tmp_path / name))
            engine = huihua.load(ckpt, vae=tmp_path / name, device="cpu", dtype="fp32")
            assert_close(engine.vae.decode(z), want, name)


def test_vae_or_lora_given_as_model_is_a_clear_error(tmp_path: Path) -> None:
    ref = tiny_reference("sd1")
    vae = {k: v for k, v in ref.ldm_state_dict().items() if k.startswith("first_stage_model.")}
    save_file(vae, str(tmp_path / "vae.safetensors"))
    with pytest.raises(CheckpointError, match=r"vae\.safetensors: this is a VAE.*--vae"):
        huihua.load(tmp_path / "vae.safetensors", device="cpu")
    save_file({"lora_unet_x.lora_up.weight": torch.zeros(2, 2)}, str(tmp_path / "lora.safetensors"))
    with pytest.raises(CheckpointError, match=r"lora\.safetensors: this is a LoRA"):
        huihua.load(tmp_path / "lora.safetensors", device="cpu")


def test_prediction_sources_and_precedence(tmp_path: Path) -> None:
    ref = tiny_reference("sd2")
    plain = write_single_file(ref, tmp_path / "plain.safetensors")
    assert huihua.load(plain, device="cpu").spec.prediction == "eps"
    meta = write_single_file(ref, tmp_path / "meta.safetensors", metadata={"modelspec.prediction_type": "v"})
    spec = huihua.load(meta, device="cpu").spec
    assert (spec.prediction, spec.prediction_source) == ("v", "metadata")
    (tmp_path / "meta.yaml").write_text('model:\n  params:\n    parameterization: "eps"\n')
    assert huihua.load(meta, device="cpu").spec.prediction_source == "yaml"
    assert huihua.load(meta, device="cpu").spec.prediction == "eps"  # the sidecar beats metadata
    spec = huihua.load(meta, device="cpu", prediction="v").spec
    assert (spec.prediction, spec.prediction_source) == ("v", "option")  # the option beats everything
    folder = write_diffusers_folder(ref, tmp_path / "pipe", prediction_type="v_prediction")
    spec = huihua.load(folder, device="cpu").spec
    assert (spec.prediction, spec.prediction_source) == ("v", "scheduler_config")


def test_zero_terminal_snr_from_metadata_and_scheduler_config(tmp_path: Path) -> None:
    import json

    from huihua.checkpoints.detect import ARCH_METADATA_KEY

    ref = tiny_reference("sd1")
    plain = huihua.load(write_single_file(ref, tmp_path / "plain.safetensors"), device="cpu")
    assert not plain.spec.zero_terminal_snr
    assert plain.model_sampling.sigma_max == pytest.approx(14.6146, rel=1e-4)
    arch = json.dumps(ref.arch() | {"zero_terminal_snr": True})
    zsnr = huihua.load(write_single_file(ref, tmp_path / "z.safetensors", metadata={ARCH_METADATA_KEY: arch}),
                       device="cpu")
    assert zsnr.spec.zero_terminal_snr
    # Lin et al.'s rescale, with A1111/ComfyUI's finite last step: sigma_max = sqrt((1 - a) / a), a = 4.897e-8.
    assert zsnr.model_sampling.sigma_max == pytest.approx(4518.8, rel=1e-3)
    assert zsnr.model_sampling.sigma_min == pytest.approx(plain.model_sampling.sigma_min, rel=1e-5)
    folder = write_diffusers_folder(ref, tmp_path / "pipe", prediction_type="v_prediction",
                                    scheduler_extra={"rescale_betas_zero_snr": True})
    spec = huihua.load(folder, device="cpu").spec
    assert spec.zero_terminal_snr and spec.prediction == "v"
    assert not huihua.load(write_diffusers_folder(ref, tmp_path / "pipe2"), device="cpu").spec.zero_terminal_snr
    # The load option (CLI --zero-terminal-snr) overrides the file either way.
    assert huihua.load(tmp_path / "plain.safetensors", device="cpu", zero_terminal_snr=True).spec.zero_terminal_snr
    assert not huihua.load(tmp_path / "z.safetensors", device="cpu", zero_terminal_snr=False).spec.zero_terminal_snr


def test_inspect_cli(tmp_path: Path, capsys) -> None:
    import hashlib

    from huihua.cli import main

    path = write_single_file(tiny_reference("sdxl"), tmp_path / "xl.safetensors", dtype=torch.float16)
    assert main(["inspect", str(path)]) == 0
    out = dict(line.split(None, 1) for line in capsys.readouterr().out.replace("text encoder ", "text_encoder_")
               .replace("params ", "params_").replace("hash (A1111)", "hash").splitlines())
    assert out["family"].strip() == "sdxl"
    assert out["dtype"].strip() == "float16"
    assert out["hash"].strip() == hashlib.sha256(path.read_bytes()).hexdigest()[:10]
    assert int(out["params_unet"].replace(",", "")) == sum(p.numel() for p in tiny_reference("sdxl").unet.parameters())
