"""Sampler and schedule names: AUTOMATIC1111 display names, ComfyUI keys and legacy combined names.

Every sampler and schedule has one canonical key (ComfyUI's spelling where ComfyUI has it) and a
display name (A1111's label).  Lookups ignore case and repeated spaces.  A legacy combined name
such as "DPM++ 2M Karras" or "k_dpmpp_2m_ka" is a sampler name followed by a schedule name; it
resolves to both.  "Automatic" stands for the sampler's own default schedule, as in A1111.
"""

from __future__ import annotations

from dataclasses import dataclass

from huihua.errors import ParameterError


@dataclass(frozen=True)
class SamplerInfo:
    """What the engine needs to know about one sampler besides its function."""

    key: str
    display: str
    aliases: tuple[str, ...] = ()
    default_schedule: str = "uniform"  # the schedule "Automatic" means for this sampler
    discard_penultimate: bool = False  # A1111 drops sigmas[-2] of a steps+1 schedule (DPM2, 3M SDE)
    eta: float = 0.0  # default ancestral/SDE noise amount (A1111's "eta_ancestral" = 1, "eta_ddim" = 0)
    brownian: bool = False  # default noise is Brownian-tree noise (SDE samplers), else plain Gaussian


@dataclass(frozen=True)
class ScheduleInfo:
    """One noise schedule's key, display name and other accepted spellings."""

    key: str
    display: str
    aliases: tuple[str, ...] = ()


SAMPLERS: tuple[SamplerInfo, ...] = (
    SamplerInfo("dpmpp_2m", "DPM++ 2M", ("k_dpmpp_2m",), "karras"),
    SamplerInfo("dpmpp_sde", "DPM++ SDE", ("k_dpmpp_sde", "dpmpp_sde_gpu"), "karras", eta=1.0, brownian=True),
    SamplerInfo(
        "dpmpp_2m_sde", "DPM++ 2M SDE", ("k_dpmpp_2m_sde", "dpmpp_2m_sde_gpu"), "exponential", eta=1.0, brownian=True
    ),
    SamplerInfo(
        "dpmpp_2m_sde_heun",
        "DPM++ 2M SDE Heun",
        ("k_dpmpp_2m_sde_heun", "dpmpp_2m_sde_heun_gpu"),
        "exponential",
        eta=1.0,
        brownian=True,
    ),
    SamplerInfo("dpmpp_2s_ancestral", "DPM++ 2S a", ("k_dpmpp_2s_a",), "karras", eta=1.0),
    SamplerInfo(
        "dpmpp_3m_sde",
        "DPM++ 3M SDE",
        ("k_dpmpp_3m_sde", "dpmpp_3m_sde_gpu"),
        "exponential",
        discard_penultimate=True,
        eta=1.0,
        brownian=True,
    ),
    SamplerInfo("euler_ancestral", "Euler a", ("k_euler_a", "k_euler_ancestral"), eta=1.0),
    SamplerInfo("euler", "Euler", ("k_euler",)),
    SamplerInfo("lms", "LMS", ("k_lms",)),
    SamplerInfo("heun", "Heun", ("k_heun",)),
    SamplerInfo("dpm_2", "DPM2", ("k_dpm_2",), "karras", discard_penultimate=True),
    SamplerInfo("dpm_2_ancestral", "DPM2 a", ("k_dpm_2_a",), "karras", discard_penultimate=True, eta=1.0),
    SamplerInfo("dpm_fast", "DPM fast", ("k_dpm_fast",), eta=1.0),
    SamplerInfo("dpm_adaptive", "DPM adaptive", ("k_dpm_ad",), eta=1.0),
    SamplerInfo("restart", "Restart", (), "karras"),
    SamplerInfo("ddim", "DDIM", (), "ddim_uniform"),
    SamplerInfo("plms", "PLMS", (), "ddim_uniform"),
    SamplerInfo("uni_pc", "UniPC", ("unipc", "uni_pc_bh1"), "sgm_uniform"),
    SamplerInfo("uni_pc_bh2", "UniPC BH2", ("unipc_bh2",), "sgm_uniform"),
    # A1111 gives LCM its Uniform default; SGM Uniform is what LCM was distilled for and what
    # ComfyUI users pick, and it avoids a wasted last step at the smallest training sigma.
    SamplerInfo("lcm", "LCM", ("k_lcm",), "sgm_uniform"),
    SamplerInfo("ddpm", "DDPM", (), "normal"),
)

SCHEDULES: tuple[ScheduleInfo, ...] = (
    ScheduleInfo("automatic", "Automatic"),
    ScheduleInfo("uniform", "Uniform"),
    ScheduleInfo("karras", "Karras", ("ka",)),
    ScheduleInfo("exponential", "Exponential", ("exp",)),
    ScheduleInfo("polyexponential", "Polyexponential"),
    ScheduleInfo("sgm_uniform", "SGM Uniform", ("sgmuniform",)),
    ScheduleInfo("kl_optimal", "KL Optimal"),
    ScheduleInfo("align_your_steps", "Align Your Steps", ("ays",)),
    ScheduleInfo("simple", "Simple"),
    ScheduleInfo("normal", "Normal"),
    ScheduleInfo("ddim_uniform", "DDIM", ("ddim",)),
    ScheduleInfo("beta", "Beta"),
)


def _norm(name: str) -> str:
    return " ".join(name.strip().lower().split())


def _sampler_table() -> dict[str, SamplerInfo]:
    table: dict[str, SamplerInfo] = {}
    for info in SAMPLERS:
        for name in (info.key, info.display, *info.aliases):
            table[_norm(name)] = info
    return table


def _schedule_table() -> dict[str, ScheduleInfo]:
    table: dict[str, ScheduleInfo] = {}
    for info in SCHEDULES:
        for name in (info.key, info.display, *info.aliases):
            table[_norm(name)] = info
    return table


def list_samplers() -> list[str]:
    """Display names of every sampler, in A1111's menu order."""
    return [info.display for info in SAMPLERS]


def list_schedules() -> list[str]:
    """Display names of every schedule, "Automatic" first."""
    return [info.display for info in SCHEDULES]


def sampler_info(name: str) -> SamplerInfo:
    """The sampler called ``name`` (key, display name or alias; no schedule suffix)."""
    info = _sampler_table().get(_norm(name))
    if info is None:
        raise ParameterError(f"sampler: unknown name {name!r}; valid: {', '.join(list_samplers())}")
    return info


def schedule_key(name: str) -> str:
    """Canonical key of the schedule called ``name`` ("automatic" included)."""
    info = _schedule_table().get(_norm(name))
    if info is None:
        raise ParameterError(f"schedule: unknown name {name!r}; valid: {', '.join(list_schedules())}")
    return info.key


def schedule_display(key: str) -> str:
    """A1111 display name of a schedule key or alias."""
    return _schedule_table()[_norm(schedule_key(key))].display


def _split_combined(name: str) -> tuple[SamplerInfo, str | None]:
    """Split "DPM++ 2M Karras" / "k_dpmpp_2m_ka" into (sampler, schedule key or None)."""
    samplers = _sampler_table()
    full = _norm(name)
    if full in samplers:
        return samplers[full], None
    for label, sched in sorted(_schedule_table().items(), key=lambda kv: -len(kv[0])):
        for sep in (" ", "_"):
            suffix = sep + label
            if full.endswith(suffix) and full[: -len(suffix)] in samplers:
                return samplers[full[: -len(suffix)]], sched.key
    raise ParameterError(f"sampler: unknown name {name!r}; valid: {', '.join(list_samplers())}")


def resolve(sampler: str, schedule: str | None = None) -> tuple[str, str]:
    """(sampler key, concrete schedule key) for a sampler name, optionally with a schedule suffix.

    A schedule suffix in ``sampler`` fills in an absent or "Automatic" ``schedule``; a different
    explicit ``schedule`` is an error.  "Automatic" becomes the sampler's default schedule.
    """
    info, suffix = _split_combined(sampler)
    explicit = schedule_key(schedule) if schedule is not None else "automatic"
    if suffix is not None and explicit not in ("automatic", suffix):
        raise ParameterError(f"schedule: {schedule!r} contradicts the schedule in sampler name {sampler!r}")
    key = suffix if suffix is not None and explicit == "automatic" else explicit
    if key == "automatic":
        key = info.default_schedule
    return info.key, key


@dataclass(frozen=True)
class ResolvedNames:
    """A sampler and the concrete schedule it runs with, resolved once per generation pass."""

    sampler: SamplerInfo
    schedule: str  # a schedule key, never "automatic"

    @property
    def sampler_display(self) -> str:
        return self.sampler.display

    @property
    def schedule_display(self) -> str:
        return schedule_display(self.schedule)


def resolve_names(sampler: str, schedule: str | None = None) -> ResolvedNames:
    """``resolve`` as a typed pair: the SamplerInfo and the concrete schedule key."""
    sampler_key, schedule_key_ = resolve(sampler, schedule)
    return ResolvedNames(sampler_info(sampler_key), schedule_key_)
