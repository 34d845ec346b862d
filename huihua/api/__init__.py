"""The typed API: one set of functions the Python facade (``Engine``), the CLI and the server all call.

Loading (``load_model``), painting (``generate(model, params, inputs, callbacks)``), prompts
(``encode_prompt``), replay from a picture (``read_replay``), the resources a generation names by
file (``hires_hooks``, ``ControlNetCache``) and saving (``save_results``).
"""

from __future__ import annotations

from huihua.api.generation import (
    adapter_hooks,
    encode_prompt,
    generate,
    load_model,
    model_path,
    recommended_settings,
    size_warning,
    split_generate_kwargs,
)
from huihua.api.replay import Replay, model_mismatch, read_replay, replay_from_record, replay_missing
from huihua.api.resources import ControlNetCache, controlnet_dirs, hires_hooks, list_controlnets
from huihua.api.saving import check_output, preview_writer, save_results
from huihua.model import Model
from huihua.pipelines.params import GenerationParams
from huihua.pipelines.resolved import ResolvedParams
from huihua.pipelines.types import (
    Callbacks,
    GenerationInputs,
    GenerationResult,
    InpaintFill,
    Mode,
    ModelFile,
    ReplayRecord,
    ResizeMode,
)

__all__ = [
    "Callbacks",
    "ControlNetCache",
    "GenerationInputs",
    "GenerationParams",
    "GenerationResult",
    "InpaintFill",
    "Mode",
    "Model",
    "ModelFile",
    "Replay",
    "ReplayRecord",
    "ResizeMode",
    "ResolvedParams",
    "adapter_hooks",
    "check_output",
    "controlnet_dirs",
    "encode_prompt",
    "generate",
    "hires_hooks",
    "list_controlnets",
    "load_model",
    "model_mismatch",
    "model_path",
    "preview_writer",
    "read_replay",
    "recommended_settings",
    "replay_from_record",
    "replay_missing",
    "save_results",
    "size_warning",
    "split_generate_kwargs",
]
