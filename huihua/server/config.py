"""The server's settings, fixed at start (``huihua serve`` options)."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Limits:
    """What one request may ask for; over a limit is a 413/422 naming it."""

    max_body_bytes: int = 64 * 1024 * 1024
    max_image_pixels: int = 4096 * 4096
    max_prompt_chars: int = 20_000
    max_work: int = 64 * 150  # batch_size × n_iter × steps
    max_batch_jobs: int = 100
    max_queued_per_client: int = 200


@dataclass(frozen=True)
class ServerConfig:
    """Where the server finds models and keeps its data, who may talk to it and how much they may ask."""

    data_dir: Path = Path("huihua-server")
    model: str | None = None  # None: the embedded model
    models_dirs: tuple[Path, ...] = ()
    lora_dirs: tuple[Path, ...] = ()
    embedding_dirs: tuple[Path, ...] = ()
    controlnet_dirs: tuple[Path, ...] = ()
    host: str = "127.0.0.1"
    port: int = 7860
    basic_auth: tuple[str, str] | None = None  # (user, password)
    token: str | None = None
    insecure_no_auth: bool = False
    cors_origins: tuple[str, ...] = ()
    allowed_hosts: tuple[str, ...] = ()  # extra Host names besides the bound address (DNS-rebinding guard)
    device: str | None = None
    dtype: str | None = None
    preview_every: int = 2
    limits: Limits = field(default_factory=Limits)

    @property
    def auth_configured(self) -> bool:
        return self.basic_auth is not None or self.token is not None

    @property
    def loopback(self) -> bool:
        return is_loopback(self.host)

    @property
    def images_dir(self) -> Path:
        return self.data_dir / "images"

    @property
    def uploads_dir(self) -> Path:
        return self.data_dir / "uploads"


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address or "localhost") is reachable only from this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
