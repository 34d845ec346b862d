"""Live previews of a generation: the sampler callback behind ``Callbacks(preview=...)``.

Every ``every`` sampling steps (counted over the whole call: every pass, every batch) the preview
callback hands ``emit(step, image)`` a picture of the current estimate, decoded by TAESD when one
is given and by the linear latent -> RGB approximation otherwise, resized to the pass's image size.
"""

from __future__ import annotations

from pathlib import Path

from huihua.checkpoints.taesd import load_taesd
from huihua.diffusion.samplers import Callback as StepCallback
from huihua.errors import ParameterError
from huihua.model import Model
from huihua.pipelines.types import PreviewFn
from huihua.runtime.preview import PreviewCallback, PreviewDecoder


def load_preview_decoder(model: Model, taesd: str | Path | PreviewDecoder | None) -> PreviewDecoder | None:
    """TAESD from a file (on the model's device), a ready decoder, or None for the approximation."""
    if taesd is None or not isinstance(taesd, (str, Path)):
        return taesd
    decoder = load_taesd(taesd)
    if decoder.decoder is None:
        raise ParameterError(f"taesd: {taesd} holds no TAESD decoder")
    return decoder.to(model.device)


def preview_callback(model: Model, preview: PreviewFn | None, every: int = 1,
                     taesd: str | Path | PreviewDecoder | None = None,
                     inner: StepCallback | None = None) -> StepCallback | None:
    """The sampler callback for ``generate``: ``inner`` alone, or wrapped by a preview callback."""
    if preview is None:
        return inner
    return PreviewCallback(preview, model.spec.family, every, load_preview_decoder(model, taesd), inner,
                           downscale=model.spec.vae.downscale)
