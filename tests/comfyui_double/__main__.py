"""The double as a process, started like ComfyUI's `main.py`.

    python -m tests.comfyui_double --listen 127.0.0.1 --port 8188 --disable-auto-launch \
        [--cuda-device N] [--extra-model-paths-config F] [--preview-method latent2rgb] \
        [--output-directory D] [--input-directory D] [--temp-directory D] [--base-directory D]

ComfyUI's other arguments are accepted and ignored with a warning. Like ComfyUI, it listens
(and `/system_stats` answers) only once started. Double-only settings come from the
environment:

- `COMFY_DOUBLE_JOB_TIME_S` (seconds per prompt), `COMFY_DOUBLE_STEP_TIME_S` (per sampler
  step), `COMFY_DOUBLE_NODE_TIME_S` (JSON `{class_type: seconds}`)
- `COMFY_DOUBLE_MODELS` (JSON `{folder: [file names]}`)
- `COMFY_DOUBLE_STARTUP_S`: seconds before it listens (ComfyUI takes ~20 s)
- `COMFY_DOUBLE_CRASH_AFTER_S`: the process dies (exit 1) this long after it started listening
- `COMFY_DOUBLE_CRASH_ON_PROMPT`: dies (exit 1) when the Nth prompt starts its first node
- `COMFY_DOUBLE_ROOT`: folder for input/output/temp/models/user when no --base-directory
  (default: a new temporary folder)
- `COMFY_DOUBLE_GPU`: `"<name>:<vram bytes>"` to report a CUDA device in `/system_stats`
- `COMFY_DOUBLE_OBJECT_INFO`: a catalogue JSON file instead of the traces' one

Debug routes beside ComfyUI's: `GET /__double__/stats`, `POST /__double__/fail_next`
`{"target", "exception_type", "message"}`, `POST /__double__/quiet_ws` `{"quiet": bool}`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
import tempfile
from pathlib import Path

from services.contracts import COMFYUI_PORT

log = logging.getLogger("comfyui_double")


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="main.py", description="ComfyUI test double")
    parser.add_argument("--listen", nargs="?", const="0.0.0.0,::", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=COMFYUI_PORT)
    parser.add_argument("--disable-auto-launch", action="store_true")
    parser.add_argument("--cuda-device", type=int, default=None)
    parser.add_argument("--extra-model-paths-config", action="append", default=[])
    parser.add_argument("--preview-method", default="none")
    parser.add_argument("--output-directory", type=Path)
    parser.add_argument("--input-directory", type=Path)
    parser.add_argument("--temp-directory", type=Path)
    parser.add_argument("--base-directory", type=Path)
    parser.add_argument("--cpu", action="store_true")
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        log.warning("ignoring ComfyUI arguments the double does not model: %s", " ".join(unknown))
    return args


def _env_float(name: str) -> float | None:
    value = os.environ.get(name)
    return float(value) if value else None


def options_from(args: argparse.Namespace, argv: list[str]) -> tuple[Path, dict]:
    root = args.base_directory or Path(
        os.environ.get("COMFY_DOUBLE_ROOT") or tempfile.mkdtemp(prefix="comfy-double-")
    )
    host = args.listen.split(",")[0]
    devices = None
    if os.environ.get("COMFY_DOUBLE_GPU"):
        name, vram = os.environ["COMFY_DOUBLE_GPU"].rsplit(":", 1)
        index = args.cuda_device or 0
        devices = [
            {
                "name": f"cuda:{index} {name} : cudaMallocAsync",
                "type": "cuda",
                "index": index,
                "vram_total": int(vram),
                "vram_free": int(vram),
                "torch_vram_total": 0,
                "torch_vram_free": 0,
            }
        ]
    options = {
        "host": host,
        "port": args.port,
        "job_time_s": _env_float("COMFY_DOUBLE_JOB_TIME_S") or 0.0,
        "step_time_s": _env_float("COMFY_DOUBLE_STEP_TIME_S"),
        "node_time_s": json.loads(os.environ.get("COMFY_DOUBLE_NODE_TIME_S") or "{}"),
        "models": json.loads(os.environ.get("COMFY_DOUBLE_MODELS") or "{}"),
        "previews": args.preview_method != "none",
        "argv": argv,
        "devices": devices,
        "output_directory": args.output_directory,
        "input_directory": args.input_directory,
        "temp_directory": args.temp_directory,
        "object_info": os.environ.get("COMFY_DOUBLE_OBJECT_INFO") or None,
        "debug_routes": True,
    }
    return root, options


async def serve(argv: list[str]) -> int:
    from tests.comfyui_double import ComfyDouble, DoubleOptions

    args = parse_args(argv[1:])
    root, options = options_from(args, argv)
    startup = _env_float("COMFY_DOUBLE_STARTUP_S")
    if startup:
        await asyncio.sleep(startup)  # simulated model loading before ComfyUI listens
    double = ComfyDouble(root, DoubleOptions(**options))
    await double.start()
    crash_on = int(os.environ.get("COMFY_DOUBLE_CRASH_ON_PROMPT") or 0)
    if crash_on:
        started: set[str] = set()

        def on_node_start(prompt_id: str, node_id: str) -> None:
            started.add(prompt_id)
            if len(started) >= crash_on:
                log.error("COMFY_DOUBLE_CRASH_ON_PROMPT: dying mid-prompt %s", prompt_id)
                os._exit(1)

        double.server.executor.on_node_start = on_node_start  # type: ignore[union-attr]
    print(f"To see the GUI go to: http://{options['host']}:{double.port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    crash_after = _env_float("COMFY_DOUBLE_CRASH_AFTER_S")
    try:
        if crash_after:
            async with asyncio.timeout(crash_after):
                await stop.wait()
        else:
            await stop.wait()
    except TimeoutError:
        log.error("COMFY_DOUBLE_CRASH_AFTER_S: dying")
        os._exit(1)
    await double.kill()
    return 0


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    sys.exit(asyncio.run(serve(argv if argv is not None else sys.argv)))


if __name__ == "__main__":
    main()
