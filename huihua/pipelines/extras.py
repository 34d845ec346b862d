"""What one generation may be given besides its parameters: a VAE for the call and live previews.

``vae_for_call`` swaps an external VAE in for one call and restores the engine's VAE afterwards,
even when the call fails. ``StepPreview`` is the sampler callback behind ``generate(preview=...)``:
every ``every`` sampling steps (counted over the whole call: every pass, every batch) it hands
``emit(step, image)`` a picture of the current estimate, decoded by TAESD when one is given and by
the linear latent -> RGB approximation otherwise, resized to the size of the pass's image.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from PIL import Image

from huihua.errors import ParameterError

if TYPE_CHECKING:
    from huihua.engine import Engine
    from huihua.runtime.preview import PreviewDecoder

PreviewFn = Callable[[int, Image.Image], None]
SamplerCallback = Callable[[int, torch.Tensor, torch.Tensor, torch.Tensor], None]


def vae_for_call(engine: Engine, vae: str | Path | None) -> AbstractContextManager[None]:
    """Use the VAE file ``vae`` inside the block (None: the engine's current VAE); restore it afterwards."""
    return engine.using_vae(vae)


def load_preview_decoder(engine: Engine, taesd: str | Path | PreviewDecoder | None) -> PreviewDecoder | None:
    """TAESD from a file (on the engine's device), a ready decoder, or None for the approximation."""
    if taesd is None or not isinstance(taesd, (str, Path)):
        return taesd
    from huihua.nn.taesd import load_taesd

    decoder = load_taesd(taesd)
    if decoder.decoder is None:
        raise ParameterError(f"taesd: {taesd} holds no TAESD decoder")
    return decoder.to(engine.device)


class StepPreview:
    """Sampler callback emitting a preview every ``every`` steps of a generation call (0, every, 2·every, ...)."""

    def __init__(self, engine: Engine, emit: PreviewFn, every: int = 1, decoder: PreviewDecoder | None = None,
                 inner: SamplerCallback | None = None) -> None:
        from huihua.runtime.preview import latent_rgb_factors

        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise ParameterError(f"preview_every: must be a whole number of steps >= 1, got {every!r}")
        if decoder is None:
            latent_rgb_factors(engine.spec.family)  # fail before sampling when there is no approximation
        self._family, self._downscale = engine.spec.family, engine.spec.vae.downscale
        self._emit, self._every, self._decoder, self._inner = emit, every, decoder, inner
        self.steps = 0  # sampling steps seen so far in this call

    def __call__(self, step: int, x: torch.Tensor, denoised: torch.Tensor, sigma: torch.Tensor) -> None:
        """Forward to ``inner``; emit (running step, preview) when the running step is a multiple of ``every``."""
        from huihua.runtime.preview import preview_image

        if self._inner is not None:
            self._inner(step, x, denoised, sigma)
        count, self.steps = self.steps, self.steps + 1
        if count % self._every:
            return
        image = preview_image(denoised, self._family, self._decoder)
        size = (denoised.shape[-1] * self._downscale, denoised.shape[-2] * self._downscale)
        self._emit(count, image if image.size == size else image.resize(size, Image.Resampling.BILINEAR))


def preview_callback(engine: Engine, preview: PreviewFn | None, every: int = 1,
                     taesd: str | Path | PreviewDecoder | None = None,
                     inner: SamplerCallback | None = None) -> SamplerCallback | None:
    """The sampler callback for ``generate``: ``inner`` alone, or wrapped by a ``StepPreview``."""
    if preview is None:
        return inner
    return StepPreview(engine, preview, every, load_preview_decoder(engine, taesd), inner)
