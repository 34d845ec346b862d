"""Trajectory parity with diffusers' schedulers: same denoiser, same sigmas, same injected noise.

diffusers is driven with the Gaussian-mixture denoiser of ``test_samplers`` converted to an
eps-prediction in the scheduler's own coordinates (variance-exploding for Euler, Heun, KDPM2, LMS;
variance-preserving x * alpha for DDIM, PNDM, DPM-Solver, UniPC, LCM).  Our sampler gets the
scheduler's own sigma list.  Tolerance: 1e-4 absolute on final latents of magnitude ~3 (the
observed gaps are 1e-6 or less; diffusers keeps its sigmas in float32).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import torch

from huihua.diffusion import samplers
from huihua.diffusion.samplers import SamplerOptions
from tests.test_samplers import mixture_denoiser

SD_KW = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000)
TOL = 1e-4
STEPS = 12
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")  # numpy 2 notes from inside diffusers



def _x() -> torch.Tensor:
    return torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)


def _denoise_at(x: torch.Tensor, sigma: float) -> torch.Tensor:
    return mixture_denoiser(x, torch.full((x.shape[0],), sigma, dtype=torch.float64))


def _distinct(values: torch.Tensor) -> torch.Tensor:
    out: list[float] = []
    for v in values.tolist():
        if not out or v != out[-1]:
            out.append(v)
    return torch.tensor(out, dtype=torch.float64)


def _drive_ve(scheduler, x: torch.Tensor, step_kwargs: Callable[[], dict] = dict) -> torch.Tensor:
    """Run a k-diffusion-style diffusers scheduler; each call's sigma is read back from its input scaling."""
    sample = x.clone()
    for t in scheduler.timesteps:
        scaled = scheduler.scale_model_input(sample, t)
        c_in = float((scaled * sample).sum() / (sample * sample).sum())  # = 1 / sqrt(sigma^2 + 1)
        sigma = math.sqrt(1 / c_in**2 - 1)
        eps = (sample - _denoise_at(sample, sigma)) / sigma
        sample = scheduler.step(eps, t, sample, **step_kwargs()).prev_sample
    return sample


def _drive_vp(scheduler, x_ve: torch.Tensor, sigma_of: Callable[[int, int], float],
              step_kwargs: Callable[[], dict] = dict) -> torch.Tensor:
    """Run a variance-preserving diffusers scheduler on x_ve * alpha; returns its final sample."""
    sample = None
    for i, t in enumerate(scheduler.timesteps):
        sigma = sigma_of(i, int(t))
        alpha = 1 / math.sqrt(1 + sigma**2)
        sample = x_ve * alpha if sample is None else sample
        x = sample / alpha
        eps = (x - _denoise_at(x, sigma)) / sigma
        sample = scheduler.step(eps, t, sample, **step_kwargs()).prev_sample
    return sample


def _timestep_sigma(scheduler) -> Callable[[int, int], float]:
    ac = scheduler.alphas_cumprod.to(torch.float64)
    return lambda i, t: math.sqrt((1 - ac[t]) / ac[t])


def _close(ours: torch.Tensor, theirs: torch.Tensor) -> None:
    assert float(theirs.abs().max()) > 1.0  # a real trajectory, not a collapse to 0
    torch.testing.assert_close(ours, theirs, atol=TOL, rtol=0)


@pytest.mark.parametrize(
    "cls_name, sampler, kw",
    [
        ("EulerDiscreteScheduler", "euler", {}),
        ("EulerDiscreteScheduler", "euler", {"use_karras_sigmas": True}),
        ("HeunDiscreteScheduler", "heun", {}),
        ("KDPM2DiscreteScheduler", "dpm_2", {}),
        ("LMSDiscreteScheduler", "lms", {}),
    ],
)
def test_k_style_schedulers(cls_name: str, sampler: str, kw: dict) -> None:
    import diffusers

    scheduler = getattr(diffusers, cls_name)(**SD_KW, **kw)
    scheduler.set_timesteps(STEPS)
    sigmas = _distinct(scheduler.sigmas.to(torch.float64))
    x = _x() * float(sigmas[0])
    _close(samplers.sample(sampler, mixture_denoiser, x, sigmas), _drive_ve(scheduler, x))


def test_euler_ancestral_with_the_same_noise() -> None:
    from diffusers import EulerAncestralDiscreteScheduler

    scheduler = EulerAncestralDiscreteScheduler(**SD_KW)
    scheduler.set_timesteps(STEPS)
    sigmas = scheduler.sigmas.to(torch.float64)
    x = _x() * float(sigmas[0])
    theirs_gen, ours_gen = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    theirs = _drive_ve(scheduler, x, lambda: {"generator": theirs_gen})
    ours = samplers.sample("Euler a", mixture_denoiser, x, sigmas,
                           lambda s, s_next: torch.randn(x.shape, generator=ours_gen, dtype=x.dtype))
    _close(ours, theirs)


@pytest.mark.parametrize("eta", [0.0, 0.7])
def test_ddim(eta: float) -> None:
    from diffusers import DDIMScheduler

    scheduler = DDIMScheduler(**SD_KW, steps_offset=1, set_alpha_to_one=True, clip_sample=False)
    scheduler.set_timesteps(STEPS)
    sigma_of = _timestep_sigma(scheduler)
    sigmas = torch.tensor([sigma_of(0, int(t)) for t in scheduler.timesteps] + [0.0], dtype=torch.float64)
    x = _x() * float(sigmas[0])
    theirs_gen, ours_gen = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    theirs = _drive_vp(
        scheduler, x, sigma_of,
        lambda: {"eta": eta, "variance_noise": torch.randn(x.shape, generator=theirs_gen, dtype=x.dtype)},
    )
    ours = samplers.sample("DDIM", mixture_denoiser, x, sigmas,
                           lambda s, s_next: torch.randn(x.shape, generator=ours_gen, dtype=x.dtype),
                           options=SamplerOptions(eta=eta))
    _close(ours, theirs)


def test_plms_matches_pndm() -> None:
    from diffusers import PNDMScheduler

    scheduler = PNDMScheduler(**SD_KW, steps_offset=1, set_alpha_to_one=True, skip_prk_steps=True)
    scheduler.set_timesteps(STEPS)
    sigma_of = _timestep_sigma(scheduler)
    timesteps = _distinct(scheduler.timesteps.to(torch.float64)).long().tolist()  # PNDM repeats its 2nd timestep
    sigmas = torch.tensor([sigma_of(0, t) for t in timesteps] + [0.0], dtype=torch.float64)
    x = _x() * float(sigmas[0])
    _close(samplers.sample("PLMS", mixture_denoiser, x, sigmas), _drive_vp(scheduler, x, sigma_of))


@pytest.mark.parametrize("algorithm, sampler", [("dpmsolver++", "dpmpp_2m"), ("sde-dpmsolver++", "dpmpp_2m_sde")])
def test_dpm_solver_multistep(algorithm: str, sampler: str) -> None:
    from diffusers import DPMSolverMultistepScheduler

    scheduler = DPMSolverMultistepScheduler(**SD_KW, algorithm_type=algorithm, use_karras_sigmas=True)
    scheduler.set_timesteps(STEPS)
    sigmas = scheduler.sigmas.to(torch.float64)
    x = _x() * float(sigmas[0])
    theirs_gen, ours_gen = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    theirs = _drive_vp(scheduler, x, lambda i, t: float(sigmas[i]),
                       lambda: {"variance_noise": torch.randn(x.shape, generator=theirs_gen, dtype=x.dtype)})
    ours = samplers.sample(sampler, mixture_denoiser, x, sigmas,
                           lambda s, s_next: torch.randn(x.shape, generator=ours_gen, dtype=x.dtype))
    _close(ours, theirs)


@pytest.mark.parametrize(
    "order, variant, final",
    [(2, "bh2", "zero"), (3, "bh2", "zero"), (3, "bh1", "sigma_min"), (2, "bh1", "sigma_min")],
)
def test_unipc(order: int, variant: str, final: str) -> None:
    from diffusers import UniPCMultistepScheduler

    # diffusers' bh1 with a final sigma of 0 divides by B(h) = -inf; its sigma_min ending is used there.
    scheduler = UniPCMultistepScheduler(**SD_KW, solver_order=order, solver_type=variant, final_sigmas_type=final)
    scheduler.set_timesteps(STEPS)
    sigmas = scheduler.sigmas.to(torch.float64)
    x = _x() * float(sigmas[0])
    theirs = _drive_vp(scheduler, x, lambda i, t: float(sigmas[i])) * math.sqrt(1 + float(sigmas[-1]) ** 2)
    name = "uni_pc" if variant == "bh1" else "uni_pc_bh2"
    _close(samplers.sample(name, mixture_denoiser, x, sigmas, options=SamplerOptions(unipc_order=order)), theirs)


def test_lcm_with_the_same_noise() -> None:
    from diffusers import LCMScheduler

    scheduler = LCMScheduler(**SD_KW)
    scheduler.set_timesteps(4)
    sigma_of = _timestep_sigma(scheduler)
    sigmas = torch.tensor([sigma_of(0, int(t)) for t in scheduler.timesteps] + [0.0], dtype=torch.float64)
    x = _x() * float(sigmas[0])
    theirs_gen, ours_gen = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    theirs = _drive_vp(scheduler, x, sigma_of, lambda: {"generator": theirs_gen})
    ours = samplers.sample("LCM", mixture_denoiser, x, sigmas,
                           lambda s, s_next: torch.randn(x.shape, generator=ours_gen, dtype=x.dtype))
    _close(ours, theirs)
