"""Samplers on analytic problems whose exact denoiser is known in closed form.

- Orders: Gaussian data x0 ~ N(mu, s^2) per coordinate; the probability-flow ODE then has the exact
  solution x(sigma) = mu + (x(sigma_max) - mu) * sqrt(s^2 + sigma^2) / sqrt(s^2 + sigma_max^2).
  Each deterministic solver is run on an exponential grid from 10 to 0.05 (no final 0, so every
  step shrinks) with 15, 30 and 60 steps in float64; the observed order log2(e_30 / e_60) must be
  within [-0.25, +0.45] of the expected one.
- Distributions: a 1-D two-component Gaussian mixture; 2000 coordinates start exactly at the
  sigma_max marginal; the Wasserstein-1 distance to the data quantiles must fall with the step count
  and end below 0.06 (the 2000-sample noise floor is ~0.04).
- Determinism, batch = singles, noise samplers and the Brownian tree.
"""

from __future__ import annotations

import functools
import math

import pytest
import torch

from huihua.diffusion import noise, samplers, schedules
from huihua.diffusion.parametrization import ModelSampling
from huihua.diffusion.samplers import SamplerOptions
from huihua.errors import ParameterError

MS = ModelSampling.for_sd()
ALL = list(samplers.SAMPLER_FUNCTIONS)



# --- analytic denoisers ------------------------------------------------------------------------------

G_MU = torch.tensor([0.5, -1.0, 2.0], dtype=torch.float64).reshape(1, 3, 1)
G_S = torch.tensor([0.3, 1.0, 2.0], dtype=torch.float64).reshape(1, 3, 1)


def gaussian_denoiser(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """E[x0 | x] for x0 ~ N(G_MU, G_S^2) per channel, x (B, 3, N)."""
    sig = sigma.reshape(-1, 1, 1)
    return G_MU + G_S**2 / (G_S**2 + sig**2) * (x - G_MU)


def gaussian_flow(x: torch.Tensor, sigma_from: float, sigma_to: float) -> torch.Tensor:
    """The exact probability-flow ODE map for the Gaussian data."""
    return G_MU + (x - G_MU) * torch.sqrt(G_S**2 + sigma_to**2) / torch.sqrt(G_S**2 + sigma_from**2)


M_W = torch.tensor([0.3, 0.7], dtype=torch.float64)
M_MU = torch.tensor([-1.5, 1.0], dtype=torch.float64)
M_S = torch.tensor([0.3, 0.5], dtype=torch.float64)


def mixture_denoiser(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """E[x0 | x] for x0 from the 1-D mixture sum_k M_W[k] N(M_MU[k], M_S[k]^2), elementwise, any shape."""
    sig = sigma.to(torch.float64).reshape(-1, *([1] * x.ndim))
    xx = x.to(torch.float64).unsqueeze(-1)
    var = M_S**2 + sig**2
    post = torch.softmax(torch.log(M_W) - 0.5 * torch.log(var) - 0.5 * (xx - M_MU) ** 2 / var, dim=-1)
    return (post * (M_MU + M_S**2 / var * (xx - M_MU))).sum(-1).to(x.dtype)


@functools.lru_cache(maxsize=1)
def mixture_quantiles(n: int) -> torch.Tensor:
    """The mixture's quantiles at (k + 1/2) / n, by bisection on its CDF."""
    p = (torch.arange(n, dtype=torch.float64) + 0.5) / n
    lo, hi = torch.full_like(p, -10.0), torch.full_like(p, 10.0)
    for _ in range(60):
        mid = (lo + hi) / 2
        below = (M_W * torch.special.ndtr((mid.unsqueeze(-1) - M_MU) / M_S)).sum(-1) < p
        lo, hi = torch.where(below, mid, lo), torch.where(below, hi, mid)
    return (lo + hi) / 2


def _no_noise(sigma: float, sigma_next: float) -> torch.Tensor:
    raise AssertionError("a deterministic run drew noise")


# --- orders of convergence -----------------------------------------------------------------------------

ORDERS = {
    "euler": 1, "ddim": 1, "euler_ancestral": 1, "heun": 2, "dpm_2": 2, "dpm_2_ancestral": 2, "restart": 2,
    "dpmpp_2m": 2, "dpmpp_2s_ancestral": 2, "dpmpp_sde": 2, "dpmpp_2m_sde": 2, "dpmpp_2m_sde_heun": 2, "plms": 2,
    # Third-order multistep methods warm up with a first-order step, which bounds the global order at 2.
    "dpmpp_3m_sde": 2, "uni_pc": 2, "uni_pc_bh2": 2,
    "lms": 3, "dpm_fast": 3,
}


def _ode_error(sampler: str, steps: int) -> float:
    x_t = G_MU + torch.sqrt(G_S**2 + 100.0) * torch.randn(2, 3, 5, generator=torch.Generator().manual_seed(0),
                                                          dtype=torch.float64)
    sigmas = schedules.exponential(steps, 0.05, 10.0)[:-1]
    out = samplers.sample(sampler, gaussian_denoiser, x_t, sigmas, _no_noise, options=SamplerOptions(eta=0.0))
    return float((out - gaussian_flow(x_t, 10.0, 0.05)).abs().max())


@pytest.mark.parametrize("sampler", list(ORDERS))
def test_deterministic_solvers_show_their_order(sampler: str) -> None:
    steps = (15, 30, 60) if sampler != "restart" else (4, 8, 16)  # Restart is Heun below 20 steps
    errors = [_ode_error(sampler, n) for n in steps]
    order = math.log2(errors[1] / errors[2])
    assert ORDERS[sampler] - 0.25 <= order <= ORDERS[sampler] + 0.45, (errors, order)


def test_third_order_multistep_beats_second_order() -> None:
    base = _ode_error("dpmpp_2m", 15)
    for sampler in ("dpmpp_3m_sde", "uni_pc", "uni_pc_bh2"):
        assert _ode_error(sampler, 15) < base / 3, sampler


# --- distributions --------------------------------------------------------------------------------------

N_SAMPLES = 2000


def _mixture_run(sampler: str, steps: int) -> float:
    gen = torch.Generator().manual_seed(0)
    comp = torch.multinomial(M_W, N_SAMPLES, replacement=True, generator=gen)
    data = M_MU[comp] + M_S[comp] * torch.randn(N_SAMPLES, generator=gen, dtype=torch.float64)
    sigmas = schedules.get_sigmas("automatic", steps, MS, sampler=sampler, dtype=torch.float64)
    x = (data + float(sigmas[0]) * torch.randn(N_SAMPLES, generator=gen, dtype=torch.float64)).reshape(1, -1)
    out = samplers.sample(sampler, mixture_denoiser, x, sigmas, seeds=[1])
    return float((out.reshape(-1).sort().values - mixture_quantiles(N_SAMPLES)).abs().mean())


@pytest.mark.parametrize("sampler", [s for s in ALL if s != "lcm"])
def test_output_distribution_converges_to_the_data(sampler: str) -> None:
    few, many = _mixture_run(sampler, 4), _mixture_run(sampler, 40)
    assert many < 0.06, many
    if sampler != "dpm_adaptive":  # picks its own steps
        assert many < 0.5 * few, (few, many)


def test_lcm_is_exact_with_a_consistency_function() -> None:
    """LCM needs a consistency model (x -> the ODE solution at 0), not a posterior mean: give it one."""
    gen = torch.Generator().manual_seed(0)
    shape = (1, 3, 4000)

    def consistency(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        return gaussian_flow(x, float(sigma[0]), 0.0)

    for steps in (1, 4):
        sigmas = schedules.get_sigmas("automatic", steps, MS, sampler="lcm", dtype=torch.float64)
        x = G_MU + torch.sqrt(G_S**2 + float(sigmas[0]) ** 2) * torch.randn(shape, generator=gen, dtype=torch.float64)
        out = samplers.sample("lcm", consistency, x, sigmas, seeds=[3])
        torch.testing.assert_close(out.mean(-1), G_MU.reshape(1, 3), atol=0.08, rtol=0)  # ~4 std errors
        torch.testing.assert_close(out.std(-1), G_S.reshape(1, 3), atol=0, rtol=0.05)
        mmse = samplers.sample("lcm", gaussian_denoiser, x, sigmas, seeds=[3])
        assert float(mmse.std(-1)[0, 2]) < 0.9 * 2.0  # with a posterior mean the spread collapses


# --- equivalences ---------------------------------------------------------------------------------------


def _replay(shape: tuple[int, ...], seed: int):
    gen = torch.Generator().manual_seed(seed)
    return lambda sigma, sigma_next: torch.randn(shape, generator=gen, dtype=torch.float64)


def test_ddpm_is_ancestral_euler_and_ddim_eta0_is_euler() -> None:
    x = 14.6 * torch.randn(2, 3, 6, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    sigmas = schedules.get_sigmas("karras", 9, MS, dtype=torch.float64)
    a = samplers.sample("DDPM", mixture_denoiser, x, sigmas, _replay(x.shape, 5))
    b = samplers.sample("Euler a", mixture_denoiser, x, sigmas, _replay(x.shape, 5))
    torch.testing.assert_close(a, b, atol=1e-12, rtol=0)
    c = samplers.sample("DDIM", mixture_denoiser, x, sigmas, _no_noise)
    d = samplers.sample("Euler", mixture_denoiser, x, sigmas, _no_noise)
    torch.testing.assert_close(c, d, atol=0, rtol=0)
    e = samplers.sample("DDIM", mixture_denoiser, x, sigmas, _replay(x.shape, 5), options=SamplerOptions(eta=1.0))
    torch.testing.assert_close(e, b, atol=0, rtol=0)


def test_callback_sees_every_step() -> None:
    seen = []
    x = 14.6 * torch.randn(1, 2, 3, generator=torch.Generator().manual_seed(0))
    sigmas = schedules.get_sigmas("karras", 5, MS)
    samplers.sample("dpmpp_2m", mixture_denoiser, x, sigmas, callback=lambda i, xi, den, s: seen.append((i, s, den)))
    assert [i for i, _, _ in seen] == [0, 1, 2, 3, 4]
    assert [s for _, s, _ in seen] == pytest.approx(sigmas[:-1].tolist())
    torch.testing.assert_close(seen[0][2], mixture_denoiser(x, sigmas[:1]))


def test_deterministic_samplers_draw_no_noise() -> None:
    x = 14.6 * torch.randn(1, 2, 3, generator=torch.Generator().manual_seed(0))
    sigmas = schedules.get_sigmas("karras", 25, MS)
    for name in ("euler", "heun", "dpm_2", "lms", "dpmpp_2m", "ddim", "plms", "uni_pc", "uni_pc_bh2"):
        samplers.sample(name, mixture_denoiser, x, sigmas, _no_noise)
    for name in ("Euler a", "DPM++ 2M SDE", "DPM fast", "Restart"):
        with pytest.raises(AssertionError, match="drew noise"):
            samplers.sample(name, mixture_denoiser, x, sigmas, _no_noise)


# --- determinism ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("sampler", ALL)
def test_same_seed_same_output_and_batch_equals_singles(sampler: str) -> None:
    x = 14.6 * torch.randn(2, 2, 3, 3, generator=torch.Generator().manual_seed(0))
    sigmas = schedules.get_sigmas("automatic", 8, MS, sampler=sampler)
    batch = samplers.sample(sampler, mixture_denoiser, x, sigmas, seeds=[7, 8])
    again = samplers.sample(sampler, mixture_denoiser, x, sigmas, seeds=[7, 8])
    assert torch.equal(batch, again)
    if sampler == "dpm_adaptive":  # one step size for the whole batch (documented)
        return
    singles = [samplers.sample(sampler, mixture_denoiser, x[i : i + 1], sigmas, seeds=[7 + i]) for i in (0, 1)]
    # Elementwise math throughout; a vectorised exp may differ from the scalar one by an ulp.
    torch.testing.assert_close(batch, torch.cat(singles), atol=1e-6, rtol=0)
    other = samplers.sample(sampler, mixture_denoiser, x, sigmas, seeds=[9, 10])
    deterministic = ("euler", "heun", "dpm_2", "lms", "dpmpp_2m", "ddim", "plms", "uni_pc", "uni_pc_bh2", "restart")
    stochastic = sampler not in deterministic  # Restart only restarts (with noise) from 20 steps on
    assert (not torch.equal(batch, other)) == stochastic


def test_default_seeds_are_0_to_b_minus_1() -> None:
    x = 14.6 * torch.randn(2, 5, generator=torch.Generator().manual_seed(0))
    sigmas = schedules.get_sigmas("karras", 6, MS)
    torch.testing.assert_close(
        samplers.sample("Euler a", mixture_denoiser, x, sigmas),
        samplers.sample("Euler a", mixture_denoiser, x, sigmas, seeds=[0, 1]),
        atol=0, rtol=0,
    )


def test_sample_rejects_bad_input() -> None:
    x = torch.zeros(1, 4)
    with pytest.raises(ParameterError, match="valid"):
        samplers.sample("DPM++ 9M", mixture_denoiser, x, torch.tensor([1.0, 0.0]))
    with pytest.raises(ParameterError, match="sigmas"):
        samplers.sample("euler", mixture_denoiser, x, torch.tensor([1.0]))
    with pytest.raises(ParameterError, match="sigmas"):
        samplers.sample("euler", mixture_denoiser, x, torch.tensor([1.0, -0.5]))
    with pytest.raises(ParameterError, match="dpm_adaptive_order"):
        SamplerOptions(dpm_adaptive_order=4)
    with pytest.raises(ParameterError, match="seeds"):
        samplers.sample("euler_ancestral", mixture_denoiser, x, torch.tensor([1.0, 0.5, 0.0]), seeds=[1, 2])


# --- noise ----------------------------------------------------------------------------------------------


def test_gaussian_noise_continues_each_images_stream() -> None:
    x = torch.zeros(2, 3, 4)
    ns = noise.GaussianNoiseSampler(x, [11, 12])
    first = noise.seeded_randn(x.shape, [11, 12])
    gens = [torch.Generator().manual_seed(s) for s in (11, 12)]
    stream = [[torch.randn(3, 4, generator=g) for _ in range(3)] for g in gens]
    torch.testing.assert_close(first, torch.stack([stream[0][0], stream[1][0]]), atol=0, rtol=0)
    torch.testing.assert_close(ns(1.0, 0.5), torch.stack([stream[0][1], stream[1][1]]), atol=0, rtol=0)
    torch.testing.assert_close(ns(0.5, 0.2), torch.stack([stream[0][2], stream[1][2]]), atol=0, rtol=0)


def test_brownian_tree_is_a_brownian_motion_fixed_by_the_seed() -> None:
    tree = noise.VirtualBrownianTree([3], 0.0, 2.0, (20000,))
    points = [0.5, 1.25, 0.1, 2.0, 0.77]
    w = {t: tree(t) for t in points}
    again = noise.VirtualBrownianTree([3], 0.0, 2.0, (20000,))
    for t in reversed(points):  # any query order gives the same path
        assert torch.equal(again(t), w[t])
    assert float(tree(0.0).abs().max()) == 0.0
    # Independent increments with variance = elapsed time (20000 samples: 3 % accuracy).
    inc = [w[0.5] - w[0.1], w[1.25] - w[0.5], w[2.0] - w[1.25]]
    for d, dt in zip(inc, (0.4, 0.75, 0.75)):
        assert float(d.var()) == pytest.approx(dt, rel=0.05)
    assert abs(float((inc[0] * inc[1]).mean())) < 0.02
    assert not torch.equal(noise.VirtualBrownianTree([4], 0.0, 2.0, (20000,))(0.5), w[0.5])


def test_brownian_noise_is_consistent_across_step_counts() -> None:
    x = torch.zeros(2, 1000)
    coarse = noise.BrownianTreeNoiseSampler(x, 0.03, 14.6, [5, 6])
    fine = noise.BrownianTreeNoiseSampler(x, 0.03, 14.6, [5, 6])
    a, b, c = 9.0, 3.0, 1.0
    n_ac = coarse(a, c)
    n_ab, n_bc = fine(a, b), fine(b, c)
    joined = n_ab * math.sqrt(a - b) + n_bc * math.sqrt(b - c)  # W(c) - W(a), whichever way it is cut
    torch.testing.assert_close(n_ac * math.sqrt(a - c), joined, atol=1e-5, rtol=0)
    assert float(n_ab.std()) == pytest.approx(1.0, rel=0.1)
    single = noise.BrownianTreeNoiseSampler(x[1:], 0.03, 14.6, [6])
    torch.testing.assert_close(single(a, c), n_ac[1:], atol=0, rtol=0)


# --- pieces -----------------------------------------------------------------------------------------------


def test_lms_coefficients_integrate_the_lagrange_basis() -> None:
    from scipy import integrate

    from huihua.diffusion.samplers.multistep import lms_coefficients

    sig = [10.0, 7.0, 4.0, 2.0, 1.0, 0.5, 0.0]
    for i in range(6):
        order = min(i + 1, 4)

        def basis(tau: float, j: int) -> float:
            return math.prod((tau - sig[i - k]) / (sig[i - j] - sig[i - k]) for k in range(order) if k != j)

        want = [integrate.quad(basis, sig[i], sig[i + 1], args=(j,), epsabs=1e-13)[0] for j in range(order)]
        assert lms_coefficients(sig, i, order) == pytest.approx(want, abs=1e-11)


def test_restart_plan_is_a1111s() -> None:
    from huihua.diffusion.samplers.restart import restart_plan

    sigmas = schedules.get_sigmas("karras", 20, MS, dtype=torch.float64).tolist()
    plan = restart_plan(sigmas)
    assert len(plan) == 20  # 11 main Karras steps + one restart of 9
    jumps = [(prev[1], cur[0]) for prev, cur in zip(plan, plan[1:]) if cur[0] > prev[1]]
    assert len(jumps) == 1
    assert jumps[0][0] == pytest.approx(0.1, rel=0.5) and jumps[0][1] == pytest.approx(2.0, rel=0.3)
    assert plan[-1][1] == 0.0 and plan[0][0] == pytest.approx(MS.sigma_max, rel=1e-6)
    assert restart_plan(sigmas[:11] + [0.0]) == list(zip(sigmas[:11], sigmas[1:11] + [0.0]))  # < 20 steps: Heun
    long = restart_plan(schedules.get_sigmas("karras", 40, MS, dtype=torch.float64).tolist())
    assert len(long) == 40 and sum(cur[0] > prev[1] for prev, cur in zip(long, long[1:])) == 2


def test_dpm_solver_samplers_stop_at_the_smallest_sigma_and_adapt() -> None:
    x_t = G_MU + 10.0 * torch.randn(1, 3, 2000, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    sigmas = schedules.exponential(30, 0.05, 10.0)  # the target is x at 0.05, not at 0
    want = gaussian_flow(x_t, 10.0, 0.05)
    calls = []

    def counted(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        calls.append(1)
        return gaussian_denoiser(x, sigma)

    def run(name: str, **opts: float) -> tuple[float, int]:
        calls.clear()
        out = samplers.sample(name, counted, x_t, sigmas, _no_noise, options=SamplerOptions(eta=0.0, **opts))
        return float((out - want).abs().max()), len(calls)

    fast, fast_calls = run("dpm_fast")
    assert fast < 5e-3 and fast_calls == 30  # exactly len(sigmas) - 1 evaluations
    loose, loose_calls = run("dpm_adaptive")
    tight, tight_calls = run("dpm_adaptive", dpm_adaptive_rtol=0.005, dpm_adaptive_atol=0.0005)
    assert loose < 0.15 and tight < 0.02 and tight < loose / 5 and tight_calls > loose_calls


def test_runs_a_wrapped_network_end_to_end() -> None:
    from huihua.diffusion.parametrization import make_denoiser

    net = torch.nn.Conv2d(4, 4, 3, padding=1)
    torch.nn.init.normal_(net.weight, std=0.05)
    seen_t = []

    def model(x_in: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        seen_t.append(t)
        return net(x_in)

    denoise = make_denoiser(model, MS)
    sigmas = schedules.get_sigmas("automatic", 6, MS, sampler="DPM++ 2M SDE")
    x = noise.seeded_randn((2, 4, 8, 8), [1, 2]) * sigmas[0]
    with torch.no_grad():
        out = samplers.sample("DPM++ 2M SDE", denoise, x, sigmas, seeds=[1, 2])
    assert out.shape == x.shape and out.dtype == torch.float32 and bool(torch.isfinite(out).all())
    assert len(seen_t) == 6 and float(seen_t[0][0]) == pytest.approx(999.0, abs=1e-3)
