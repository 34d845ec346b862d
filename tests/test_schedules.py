"""Training schedule, parametrizations, noise schedules, name resolution and img2img cuts.

Oracles: diffusers' schedulers (training sigmas, log-sigma interpolation, Karras / exponential / beta
sigmas, AYS lists, DDIM timesteps), scipy's Beta quantiles, and the published formulas written out
in the test.  Tolerances are stated per assertion; float64 formulas are compared at 1e-12 relative.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from huihua.diffusion import names, schedules
from huihua.diffusion.parametrization import ModelSampling, make_denoiser
from huihua.errors import ParameterError

MS = ModelSampling.for_sd()
SD_KW = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000)


def _euler_scheduler(**kw):
    from diffusers import EulerDiscreteScheduler

    return EulerDiscreteScheduler(**SD_KW, **kw)


# --- the training schedule and the parametrization ------------------------------------------------


def test_training_sigmas_match_diffusers_and_ldm_range() -> None:
    ref = _euler_scheduler()
    ac = ref.alphas_cumprod.to(torch.float64)
    theirs = ((1 - ac) / ac).sqrt()
    torch.testing.assert_close(MS.sigmas.to(torch.float64), theirs, rtol=2e-5, atol=0)  # diffusers cumprods in float32
    assert MS.sigma_min == pytest.approx(0.0291675, abs=1e-6)
    assert MS.sigma_max == pytest.approx(14.614642, abs=1e-5)
    assert MS.timesteps == 1000


def test_zero_terminal_snr_matches_lin_et_al_rescale() -> None:
    from diffusers.schedulers.scheduling_ddim import rescale_zero_terminal_snr

    betas = torch.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=torch.float64) ** 2
    ac = torch.cumprod(1 - rescale_zero_terminal_snr(betas), 0)
    ms = ModelSampling.for_sd("v", zero_terminal_snr=True)
    theirs = ((1 - ac[:-1]) / ac[:-1]).sqrt()
    # Our cumulative alphas are stored in float32 before sigmas are taken, as LDM does.
    torch.testing.assert_close(ms.sigmas[:-1].to(torch.float64), theirs, rtol=2e-5, atol=0)
    assert ms.sigma_max == pytest.approx(math.sqrt((1 - 4.8973451890853435e-08) / 4.8973451890853435e-08), rel=1e-6)
    assert ms.sigma_min == pytest.approx(MS.sigma_min, rel=1e-6)  # the first alpha is kept


def test_sigma_to_t_interpolates_log_sigma_like_diffusers() -> None:
    ref = _euler_scheduler()
    log_sigmas = MS.log_sigmas.to(torch.float64).numpy()
    sigmas = torch.tensor([0.02, 0.0291675, 0.05, 0.3, 1.0, 2.5, 7.7, 14.6146, 20.0], dtype=torch.float64)
    theirs = ref._sigma_to_t(sigmas.numpy(), log_sigmas)
    np.testing.assert_allclose(MS.sigma_to_t(sigmas).numpy(), theirs, rtol=0, atol=1e-4)
    t = torch.tensor([0.0, 17.0, 500.0, 999.0], dtype=torch.float64)
    torch.testing.assert_close(MS.t_to_sigma(t), MS.sigmas[[0, 17, 500, 999]].to(torch.float64), rtol=1e-6, atol=0)
    mid = MS.t_to_sigma(torch.tensor([17.25], dtype=torch.float64))
    want = math.exp(0.75 * math.log(float(MS.sigmas[17])) + 0.25 * math.log(float(MS.sigmas[18])))
    assert float(mid) == pytest.approx(want, rel=1e-6)
    roundtrip = MS.sigma_to_t(MS.t_to_sigma(torch.tensor([3.5, 250.25, 998.9], dtype=torch.float64)))
    torch.testing.assert_close(roundtrip, torch.tensor([3.5, 250.25, 998.9], dtype=torch.float64), atol=1e-4, rtol=0)
    assert MS.sigma_to_t(torch.tensor([0.3]), quantize=True).item() == float(MS.sigma_to_t(torch.tensor([0.3])).round())


@pytest.mark.parametrize("prediction", ["eps", "v"])
def test_denoiser_recovers_x0_from_an_exact_network(prediction: str) -> None:
    ms = ModelSampling.for_sd(prediction)
    gen = torch.Generator().manual_seed(0)
    x0 = torch.randn(3, 4, 5, 5, generator=gen, dtype=torch.float64)
    noise = torch.randn(3, 4, 5, 5, generator=gen, dtype=torch.float64)
    sigma = torch.tensor([14.6, 1.3, 0.05], dtype=torch.float64)
    seen = {}

    def network(x_in, t):  # an oracle that knows x0 and noise and answers in the network's own terms
        seen["x_in"], seen["t"] = x_in, t
        s = ms.t_to_sigma(t).reshape(-1, 1, 1, 1)
        alpha, sigma_vp = 1 / (1 + s**2).sqrt(), s / (1 + s**2).sqrt()
        return noise if prediction == "eps" else alpha * noise - sigma_vp * x0

    x = x0 + sigma.reshape(-1, 1, 1, 1) * noise
    out = make_denoiser(network, ms)(x, sigma)
    torch.testing.assert_close(out, x0, atol=1e-5, rtol=0)  # t round trip is float64-exact, table float32
    torch.testing.assert_close(seen["x_in"], x / (sigma.reshape(-1, 1, 1, 1) ** 2 + 1).sqrt())
    torch.testing.assert_close(seen["t"], ms.sigma_to_t(sigma))


def test_model_sampling_rejects_bad_prediction() -> None:
    with pytest.raises(ParameterError, match="prediction"):
        ModelSampling.for_sd("x0")  # type: ignore[arg-type]


# --- schedule formulas --------------------------------------------------------------------------------


def _ends(sigmas: torch.Tensor) -> tuple[float, float]:
    return float(sigmas[0]), float(sigmas[-2])


def test_karras_and_exponential_match_diffusers() -> None:
    ref = _euler_scheduler()
    table = MS.sigmas.flip(0)
    for steps in (1, 7, 20):
        ours = schedules.get_sigmas("Karras", steps, MS, dtype=torch.float64)
        theirs = ref._convert_to_karras(table, steps)
        np.testing.assert_allclose(ours[:-1].numpy(), theirs, rtol=1e-12)
        ours = schedules.get_sigmas("exponential", steps, MS, dtype=torch.float64)
        np.testing.assert_allclose(ours[:-1].numpy(), ref._convert_to_exponential(table, steps), rtol=1e-12)
    rho = schedules.karras(10, 0.1, 10.0, rho=3.0)[:-1]
    np.testing.assert_allclose(rho.numpy() ** (1 / 3), np.linspace(10 ** (1 / 3), 0.1 ** (1 / 3), 10), rtol=1e-12)


def test_beta_matches_diffusers_and_scipy() -> None:
    ref = _euler_scheduler()
    ours = schedules.get_sigmas("Beta", 12, MS, dtype=torch.float64)
    np.testing.assert_allclose(ours[:-1].numpy(), ref._convert_to_beta(MS.sigmas.flip(0), 12), rtol=1e-10)
    from scipy import stats

    for q in (1e-4, 0.2, 0.5, 0.9, 0.9999):
        assert schedules.beta_ppf(q, 0.6, 0.6) == pytest.approx(stats.beta.ppf(q, 0.6, 0.6), abs=1e-12)
        assert schedules.beta_ppf(q, 2.0, 5.0) == pytest.approx(stats.beta.ppf(q, 2.0, 5.0), abs=1e-12)


def test_align_your_steps_is_the_published_list_at_10_steps() -> None:
    from diffusers.schedulers.scheduling_utils import AysSchedules

    sd1 = schedules.get_sigmas("Align Your Steps", 10, MS, dtype=torch.float64)
    np.testing.assert_allclose(sd1.numpy(), AysSchedules["StableDiffusionSigmas"], rtol=1e-12)
    opts = schedules.ScheduleOptions(ays_family="sdxl")
    sdxl = schedules.get_sigmas("align_your_steps", 10, MS, options=opts, dtype=torch.float64)
    np.testing.assert_allclose(sdxl.numpy(), AysSchedules["StableDiffusionXLSigmas"], rtol=1e-12)
    # 20 steps: 21 points evenly spread in index over the 11, log-linear between neighbours.
    s20 = schedules.align_your_steps(20)
    assert float(s20[0]) == pytest.approx(14.615) and float(s20[-1]) == 0.0 and len(s20) == 21
    assert float(s20[2]) == pytest.approx(6.475, rel=1e-12)  # every other point is a published one
    assert float(s20[1]) == pytest.approx(math.sqrt(14.615 * 6.475), rel=1e-12)


def test_timestep_schedules_follow_their_formulas() -> None:
    table = MS.sigmas.to(torch.float64)
    # Uniform / Normal: timesteps linspace(999, 0, n); at n = 10 they are integers (999/9 = 111).
    want = table[[999 - 111 * i for i in range(10)]]
    np.testing.assert_allclose(schedules.get_sigmas("Uniform", 10, MS, dtype=torch.float64)[:-1], want, rtol=1e-6)
    np.testing.assert_allclose(schedules.get_sigmas("normal", 10, MS, dtype=torch.float64)[:-1], want, rtol=1e-6)
    # SGM Uniform: linspace(999, 0, n + 1) without its last point; at n = 9, 999/9 = 111 again.
    sgm = schedules.get_sigmas("SGM Uniform", 9, MS, dtype=torch.float64)
    np.testing.assert_allclose(sgm[:-1], table[[999 - 111 * i for i in range(9)]], rtol=1e-6)
    # Simple: sigmas[-(1 + int(i * 1000 / n))].
    np.testing.assert_allclose(
        schedules.get_sigmas("Simple", 7, MS, dtype=torch.float64)[:-1],
        table[[999 - int(i * 1000 / 7) for i in range(7)]],
    )
    # KL Optimal: tan of a linear blend of arctans, sigma_max .. sigma_min, then 0.
    kl = schedules.get_sigmas("KL Optimal", 5, MS, dtype=torch.float64)
    w = np.linspace(0, 1, 5)
    want_kl = np.tan(w * math.atan(MS.sigma_min) + (1 - w) * math.atan(MS.sigma_max))
    np.testing.assert_allclose(kl[:-1].numpy(), want_kl, rtol=1e-12)
    # Polyexponential with rho = 1 is Exponential.
    opts = schedules.ScheduleOptions(rho=1.0)
    np.testing.assert_allclose(
        schedules.get_sigmas("polyexponential", 8, MS, options=opts), schedules.get_sigmas("exponential", 8, MS)
    )


@pytest.mark.parametrize("steps", [20, 30, 7])
def test_ddim_schedule_is_diffusers_ddim_timesteps(steps: int) -> None:
    from diffusers import DDIMScheduler

    ref = DDIMScheduler(**SD_KW, steps_offset=1, timestep_spacing="leading")
    ref.set_timesteps(steps)
    ours = schedules.get_sigmas("DDIM", steps, MS, dtype=torch.float64)
    np.testing.assert_allclose(ours[:-1].numpy(), MS.sigmas.to(torch.float64)[ref.timesteps].numpy(), rtol=0)
    assert len(ours) == steps + 1


@pytest.mark.parametrize("name", [s for s in names.list_schedules() if s != "Automatic"])
@pytest.mark.parametrize("steps", [1, 2, 13, 50])
def test_every_schedule_is_decreasing_and_ends_in_zero(name: str, steps: int) -> None:
    sigmas = schedules.get_sigmas(name, steps, MS)
    assert sigmas.shape == (steps + 1,) and sigmas.dtype == torch.float32
    assert float(sigmas[-1]) == 0.0
    assert bool(torch.isfinite(sigmas).all()) and bool((sigmas[:-1] > 0).all())
    assert bool((sigmas[1:] < sigmas[:-1]).all())
    assert float(sigmas[0]) <= MS.sigma_max * (1 + 1e-4)  # AYS starts at 14.615
    if name != "DDIM":  # DDIM's "leading" timesteps start at 1 + (steps-1)*(1000//steps), as A1111's
        assert float(sigmas[0]) > 10.0


def test_automatic_and_discarded_penultimate_sigma() -> None:
    auto = schedules.get_sigmas("Automatic", 12, MS, sampler="DPM++ 2M")
    torch.testing.assert_close(auto, schedules.get_sigmas("Karras", 12, MS))
    uniform = schedules.uniform(12, MS).float()
    torch.testing.assert_close(schedules.get_sigmas("Automatic", 12, MS, sampler="Euler a"), uniform)
    torch.testing.assert_close(schedules.get_sigmas("Automatic", 12, MS), uniform)
    for sampler in ("DPM2", "dpm_2_ancestral", "DPM++ 3M SDE"):
        got = schedules.get_sigmas("Karras", 12, MS, sampler=sampler)
        full = schedules.get_sigmas("Karras", 13, MS)
        assert got.shape == (13,)
        torch.testing.assert_close(got, torch.cat([full[:-2], full[-1:]]))
    legacy = schedules.get_sigmas("Automatic", 12, MS, sampler="DPM++ 2M SDE Karras")
    torch.testing.assert_close(legacy, schedules.get_sigmas("Karras", 12, MS))


def test_schedule_errors_name_the_field() -> None:
    with pytest.raises(ParameterError, match="Karras"):
        schedules.get_sigmas("carras", 10, MS)
    with pytest.raises(ParameterError, match="steps"):
        schedules.get_sigmas("karras", 0, MS)


# --- img2img -------------------------------------------------------------------------------------------


def test_img2img_cuts_like_a1111() -> None:
    calls = []

    def sigmas_fn(n: int) -> torch.Tensor:
        calls.append(n)
        return schedules.get_sigmas("karras", n, MS)

    tail = schedules.img2img_sigmas(sigmas_fn, 20, 0.75)  # t_enc = 15 -> sigmas[4:], 16 steps
    torch.testing.assert_close(tail, schedules.get_sigmas("karras", 20, MS)[4:])
    assert calls[-1] == 20 and len(tail) - 1 == 16
    exact = schedules.img2img_sigmas(sigmas_fn, 20, 0.75, exact_steps=True)  # 26-step schedule, last 20
    assert calls[-1] == 26 and len(exact) - 1 == 20
    torch.testing.assert_close(exact, schedules.get_sigmas("karras", 26, MS)[6:])
    full = schedules.img2img_sigmas(sigmas_fn, 20, 1.0)
    torch.testing.assert_close(full, schedules.get_sigmas("karras", 20, MS))
    assert len(schedules.img2img_sigmas(sigmas_fn, 20, 0.01)) == 2  # int(0.2) = 0 -> one step
    with pytest.raises(ParameterError, match="strength"):
        schedules.img2img_sigmas(sigmas_fn, 20, 0.0)


# --- names ---------------------------------------------------------------------------------------------

A1111_SAMPLERS = [
    "Euler", "Euler a", "Heun", "DPM2", "DPM2 a", "LMS", "DPM++ 2S a", "DPM++ 2M", "DPM++ SDE", "DPM++ 2M SDE",
    "DPM++ 2M SDE Heun", "DPM++ 3M SDE", "DPM fast", "DPM adaptive", "Restart", "DDIM", "PLMS", "UniPC", "LCM", "DDPM",
]


def test_listed_names_cover_the_a1111_sets() -> None:
    assert set(A1111_SAMPLERS) <= set(names.list_samplers())
    assert names.list_schedules() == [
        "Automatic", "Uniform", "Karras", "Exponential", "Polyexponential", "SGM Uniform", "KL Optimal",
        "Align Your Steps", "Simple", "Normal", "DDIM", "Beta",
    ]
    for display in names.list_samplers():
        assert names.sampler_info(display).display == display


@pytest.mark.parametrize(
    "name, schedule, want",
    [
        ("DPM++ 2M Karras", None, ("dpmpp_2m", "karras")),
        ("DPM++ 2M", None, ("dpmpp_2m", "karras")),
        ("dpmpp_2m", "exponential", ("dpmpp_2m", "exponential")),
        ("Euler a", None, ("euler_ancestral", "uniform")),
        ("euler_ancestral", "SGM Uniform", ("euler_ancestral", "sgm_uniform")),
        ("DPM++ 2M SDE Heun", "Automatic", ("dpmpp_2m_sde_heun", "exponential")),
        ("DPM++ 2M SDE Heun Karras", None, ("dpmpp_2m_sde_heun", "karras")),
        ("dpmpp_2m_sde_gpu", "karras", ("dpmpp_2m_sde", "karras")),
        ("k_dpmpp_2m_ka", None, ("dpmpp_2m", "karras")),
        ("DPM++ 3M SDE Exponential", None, ("dpmpp_3m_sde", "exponential")),
        ("  dpm++   sde  karras ", None, ("dpmpp_sde", "karras")),
        ("UniPC", None, ("uni_pc", "sgm_uniform")),
        ("uni_pc_bh2", "ddim_uniform", ("uni_pc_bh2", "ddim_uniform")),
        ("DDIM", None, ("ddim", "ddim_uniform")),
        ("Euler DDIM", None, ("euler", "ddim_uniform")),
        ("LCM", "Align Your Steps", ("lcm", "align_your_steps")),
        ("Restart", None, ("restart", "karras")),
        ("DDPM", "beta", ("ddpm", "beta")),
    ],
)
def test_resolve_names(name: str, schedule: str | None, want: tuple[str, str]) -> None:
    assert names.resolve(name, schedule) == want


def test_unknown_or_contradictory_names_are_errors_listing_valid_ones() -> None:
    with pytest.raises(ParameterError, match="DPM\\+\\+ 2M SDE Heun") as err:
        names.resolve("DPM++ 4M")
    assert "Euler a" in str(err.value) and "UniPC" in str(err.value)
    with pytest.raises(ParameterError, match="Align Your Steps"):
        names.resolve("Euler", "Alien Your Steps")
    with pytest.raises(ParameterError, match="contradicts"):
        names.resolve("DPM++ 2M Karras", "exponential")
    assert names.resolve("DPM++ 2M Karras", "karras") == ("dpmpp_2m", "karras")
