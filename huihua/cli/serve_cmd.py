"""``huihua serve``: the HTTP server (A1111-compatible routes and the native job queue) on uvicorn."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import uvicorn

from huihua.errors import ParameterError
from huihua.server.app import create_app
from huihua.server.config import ServerConfig, is_loopback


def _secret(value: str | None, env: str, what: str) -> str | None:
    """A secret from the option, else the environment variable; ``@FILE`` reads it from a file."""
    value = value if value is not None else os.environ.get(env)
    if value is not None and value.startswith("@"):
        try:
            value = Path(value[1:]).read_text(encoding="utf-8").strip()
        except OSError as e:
            raise ParameterError(f"{what}: cannot read {value[1:]} ({e.strerror})") from None
    return value or None


def config_from_args(args: argparse.Namespace) -> ServerConfig:
    """The server configuration the options ask for; refuses an open bind without authentication."""
    auth = _secret(args.api_auth, "HUIHUA_API_AUTH", "--api-auth")
    basic = None
    if auth is not None:
        user, sep, password = auth.partition(":")
        if not sep or not user or not password:
            raise ParameterError("--api-auth: expected USER:PASSWORD")
        basic = (user, password)
    token = _secret(args.token, "HUIHUA_TOKEN", "--token")
    if not is_loopback(args.host) and basic is None and token is None and not args.insecure_no_auth:
        raise ParameterError(f"--host {args.host}: other machines could reach the server; set --api-auth USER:PASS "
                             "or --token TOKEN (or --insecure-no-auth if you really mean it)")
    for option, folders in (("--models-dir", args.models_dir), ("--lora-dir", args.lora_dir),
                            ("--embedding-dir", args.embedding_dir), ("--controlnet-dir", args.controlnet_dir)):
        for folder in folders:
            if not folder.is_dir():
                raise ParameterError(f"{option} {folder}: not a folder")
    return ServerConfig(
        data_dir=args.data, model=args.model, models_dirs=tuple(args.models_dir), lora_dirs=tuple(args.lora_dir),
        embedding_dirs=tuple(args.embedding_dir), controlnet_dirs=tuple(args.controlnet_dir), host=args.host,
        port=args.port, basic_auth=basic, token=token, insecure_no_auth=args.insecure_no_auth,
        cors_origins=tuple(args.cors_allow_origins), allowed_hosts=tuple(args.allowed_host), device=args.device,
        dtype=args.dtype)


def run(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    if config.insecure_no_auth and not config.loopback and not config.auth_configured:
        print(f"huihua: warning: serving on {config.host} with no authentication: anyone who can reach this "
              "machine can use it", file=sys.stderr)
    app = create_app(config)
    print(f"huihua: serving on http://{config.host}:{config.port} (data in {config.data_dir})", file=sys.stderr)
    uvicorn.run(app, host=config.host, port=config.port, log_level="warning", server_header=False)
    return 0
