"""Loading streams tensors: peak memory stays under 1.5x the model's in-memory size, and repeated
load/unload cycles do not grow the process (measured in a fresh subprocess, anonymous RSS, sampled
every millisecond; the page cache of the file itself is not the process's memory)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

_SCRIPT = textwrap.dedent(
    """
    import json, sys, threading, time
    import torch
    import huihua
    from huihua.runtime.memory import release_memory

    def anon():
        with open("/proc/self/statm") as f:
            fields = f.read().split()
        import os
        return (int(fields[1]) - int(fields[2])) * os.sysconf("SC_PAGE_SIZE")

    path, dtype = sys.argv[1], sys.argv[2]
    peak = [0]
    stop = [False]
    def sample():
        while not stop[0]:
            peak[0] = max(peak[0], anon())
            time.sleep(0.0005)

    release_memory()
    base = anon()
    t = threading.Thread(target=sample, daemon=True); t.start()
    engine = huihua.load(path, device="cpu", dtype=dtype)
    stop[0] = True; t.join()
    size = sum(p.numel() * p.element_size() for m in (engine.unet, engine.vae, *engine.text_encoders)
               for p in m.parameters())
    after = []
    engine.unload(); del engine; release_memory()
    after.append(anon() - base)
    for _ in range(4):
        engine = huihua.load(path, device="cpu", dtype=dtype)
        engine.unload(); del engine; release_memory()
        after.append(anon() - base)
    print(json.dumps({"size": size, "peak": peak[0] - base, "after": after}))
    """
)


def _write_model(path: Path) -> None:
    """A ~60 MB SD1-layout checkpoint with random weights, from our own modules."""
    import torch
    from safetensors.torch import save_file

    from huihua.checkpoints.detect import ARCH_METADATA_KEY
    from huihua.nn.configs import CLIPTextConfig, UNetConfig, VAEConfig
    from huihua.nn.clip import build_text_encoder
    from huihua.nn.unet import UNetModel
    from huihua.nn.vae import AutoencoderKL

    torch.manual_seed(0)
    unet = UNetModel(UNetConfig(model_channels=128, channel_mult=(1, 2, 2), transformer_depth=(1, 1, 0),
                                num_heads=4, context_dim=128))
    vae = AutoencoderKL(VAEConfig(ch=32, ch_mult=(1, 2), num_res_blocks=1))
    te = build_text_encoder(CLIPTextConfig(width=128, layers=2, heads=2, intermediate=256))
    sd = {}
    for prefix, m in (("model.diffusion_model.", unet), ("first_stage_model.", vae), ("cond_stage_model.", te)):
        sd |= {prefix + k: v.contiguous() for k, v in m.state_dict().items()}
    save_file(sd, str(path), metadata={ARCH_METADATA_KEY: json.dumps({"num_heads": 4, "text_heads": [2]})})


def test_streaming_load_peak_and_no_growth(tmp_path: Path) -> None:
    path = tmp_path / "medium.safetensors"
    _write_model(path)
    out = subprocess.run([sys.executable, "-c", _SCRIPT, str(path), "fp32"], capture_output=True, text=True,
                         timeout=300, check=True)
    r = json.loads(out.stdout.strip().splitlines()[-1])
    size = r["size"]
    assert size > 40e6
    assert r["peak"] < 1.5 * size, f"peak {r['peak'] / 1e6:.1f} MB for a {size / 1e6:.1f} MB model"
    growth = r["after"][-1] - r["after"][0]
    assert growth < 0.1 * size, f"memory grew by {growth / 1e6:.1f} MB over 4 load/unload cycles"
    assert r["after"][-1] < 0.5 * size, f"{r['after'][-1] / 1e6:.1f} MB still held after unload"
