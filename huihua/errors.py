"""huihua's exception types: every user-facing failure is one of these, with a one-line message."""

from __future__ import annotations


class HuihuaError(Exception):
    """Base class of every error huihua raises on purpose."""


class CheckpointError(HuihuaError):
    """A model file cannot be read, is not what it claims, or does not fit the network."""


class UnsafePickleError(CheckpointError):
    """A pickle file asks to run code or build objects beyond plain tensors; it was refused."""


class DetectionError(CheckpointError):
    """The architecture of a state dict could not be recognised from its keys and shapes."""


class ParameterError(HuihuaError, ValueError):
    """A generation or API parameter is out of range; the message names the field."""


class PromptError(HuihuaError, ValueError):
    """A prompt cannot be understood (unknown LoRA or embedding, bad syntax that cannot be recovered)."""
