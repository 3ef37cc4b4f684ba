"""What the double's nodes do: cheap stand-ins for ComfyUI's node classes.

No tensors: an IMAGE is its size, batch and a fill colour, a LATENT its size and batch. That is
enough for what the worker and gateway can observe: the save nodes write real files of the
graph's size (PNG, animated WEBP, `.latent`), the preview nodes write temp PNGs, text outputs
come back as text, and the run-time errors of the traces happen where ComfyUI raises them
(a string fed to SaveImage, a LatentComposite batch mismatch). Any class without a stand-in
returns placeholder values of its declared output types.

Time is the executor's business: a sampler node asks it to run its steps (`ctx.run_steps`),
which is where progress, previews and interrupts happen.
"""

from __future__ import annotations

import asyncio
import json
import random
import struct
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image
from PIL.PngImagePlugin import PngInfo

from services.comfy import shapes
from tests.comfyui_double.folders import Folders


@dataclass(frozen=True)
class ImageValue:
    width: int
    height: int
    batch: int = 1
    color: tuple[int, int, int] = (0, 0, 0)

    def __str__(self) -> str:
        return f"IMAGE tensor of shape [{self.batch}, {self.height}, {self.width}, 3]"


@dataclass(frozen=True)
class LatentValue:
    width: int  # in latent units (pixels / 8)
    height: int
    batch: int = 1

    def __str__(self) -> str:
        return f"{{'samples': tensor of shape [{self.batch}, 4, {self.height}, {self.width}]}}"


@dataclass(frozen=True)
class MaskValue:
    width: int
    height: int
    batch: int = 1

    def __str__(self) -> str:
        return f"MASK tensor of shape [{self.batch}, {self.height}, {self.width}]"


@dataclass(frozen=True)
class Opaque:
    """A value the double does not model (MODEL, CLIP, VAE, CONDITIONING, ...)."""

    type_name: str

    def __str__(self) -> str:
        return f"<{self.type_name}>"


class NodeError(Exception):
    """A run-time failure reported with ComfyUI's exception type name (`exception_type`)."""

    def __init__(self, exception_type: str, message: str):
        super().__init__(message)
        self.exception_type = exception_type


@dataclass
class RunContext:
    node_id: str
    class_type: str
    inputs: dict[str, Any]  # constants, and the upstream values for links
    prompt: dict
    extra_data: dict
    folders: Folders
    state: dict[str, Any]  # per (node id, class) and kept between prompts, like node objects
    run_steps: Callable[[int, LatentValue | None], Awaitable[None]]
    return_types: tuple[str, ...] = ()

    def get(self, name: str, default: Any = None) -> Any:
        return self.inputs.get(name, default)


@dataclass
class NodeResult:
    outputs: tuple[Any, ...] = ()
    ui: dict[str, Any] | None = None


Simulation = Callable[[RunContext], Awaitable[NodeResult]]
SIMULATIONS: dict[str, Simulation] = {}

#: Node classes that run sampler steps (one `progress` message per step).
SAMPLERS = ("KSampler", "KSamplerAdvanced")


def simulates(*class_types: str):
    def register(function: Simulation) -> Simulation:
        for class_type in class_types:
            SIMULATIONS[class_type] = function
        return function

    return register


def _rgb(color: int) -> tuple[int, int, int]:
    return ((color >> 16) & 0xFF, (color >> 8) & 0xFF, color & 0xFF)


def _image(value: Any) -> ImageValue:
    """The IMAGE input, failing where ComfyUI's save nodes fail on a non-tensor."""
    if not isinstance(value, ImageValue):
        raise AttributeError(f"'{type(value).__name__}' object has no attribute 'shape'")
    return value


@simulates("EmptyImage")
async def empty_image(ctx: RunContext) -> NodeResult:
    return NodeResult(
        (
            ImageValue(
                ctx.get("width"),
                ctx.get("height"),
                ctx.get("batch_size"),
                _rgb(ctx.get("color", 0)),
            ),
        )
    )


@simulates("ImageScale")
async def image_scale(ctx: RunContext) -> NodeResult:
    image = _image(ctx.get("image"))
    width, height = ctx.get("width"), ctx.get("height")
    if width == 0 and height == 0:
        return NodeResult((image,))
    if width == 0:
        width = max(1, round(image.width * height / image.height))
    if height == 0:
        height = max(1, round(image.height * width / image.width))
    return NodeResult((ImageValue(width, height, image.batch, image.color),))


@simulates("ImageInvert")
async def image_invert(ctx: RunContext) -> NodeResult:
    image = _image(ctx.get("image"))
    r, g, b = image.color
    return NodeResult(
        (ImageValue(image.width, image.height, image.batch, (255 - r, 255 - g, 255 - b)),)
    )


def _read_image(path: Path) -> tuple[int, int, tuple[int, int, int], bool]:
    with Image.open(path) as img:
        rgb = img.convert("RGB")
        return img.width, img.height, rgb.getpixel((0, 0)), "A" in img.getbands()


@simulates("LoadImage", "LoadImageOutput")
async def load_image(ctx: RunContext) -> NodeResult:
    width, height, color, has_alpha = await asyncio.to_thread(
        _read_image, ctx.folders.annotated_path(ctx.get("image"))
    )
    mask = MaskValue(width, height) if has_alpha else MaskValue(64, 64)  # ComfyUI's default mask
    return NodeResult((ImageValue(width, height, 1, color), mask))


@simulates("LoadImageMask")
async def load_image_mask(ctx: RunContext) -> NodeResult:
    width, height, _, _ = await asyncio.to_thread(
        _read_image, ctx.folders.annotated_path(ctx.get("image"))
    )
    return NodeResult((MaskValue(width, height),))


@simulates("MaskToImage")
async def mask_to_image(ctx: RunContext) -> NodeResult:
    mask = ctx.get("mask")
    return NodeResult((ImageValue(mask.width, mask.height, mask.batch, (0, 0, 0)),))


@simulates("EmptyLatentImage")
async def empty_latent(ctx: RunContext) -> NodeResult:
    return NodeResult(
        (LatentValue(ctx.get("width") // 8, ctx.get("height") // 8, ctx.get("batch_size")),)
    )


@simulates(*SAMPLERS)
async def ksampler(ctx: RunContext) -> NodeResult:
    latent = ctx.get("latent_image")
    await ctx.run_steps(
        int(ctx.get("steps", 1)), latent if isinstance(latent, LatentValue) else None
    )
    return NodeResult((latent,))


@simulates("VAEDecode")
async def vae_decode(ctx: RunContext) -> NodeResult:
    latent = ctx.get("samples")
    return NodeResult(
        (ImageValue(latent.width * 8, latent.height * 8, latent.batch, (127, 127, 127)),)
    )


@simulates("VAEEncode")
async def vae_encode(ctx: RunContext) -> NodeResult:
    image = _image(ctx.get("pixels"))
    return NodeResult((LatentValue(image.width // 8, image.height // 8, image.batch),))


@simulates("LatentComposite")
async def latent_composite(ctx: RunContext) -> NodeResult:
    to, src = ctx.get("samples_to"), ctx.get("samples_from")
    if src.batch not in (1, to.batch):  # torch cannot broadcast the pasted batch
        raise NodeError(
            "RuntimeError",
            (
                f"The expanded size of the tensor ({to.batch}) must match the existing size "
                f"({src.batch}) at non-singleton dimension 0.  Target sizes: "
                f"[{to.batch}, 4, {to.height}, {to.width}].  "
                f"Tensor sizes: [{src.batch}, 4, {src.height}, {src.width}]"
            ),
        )
    return NodeResult((to,))


def _png_info(ctx: RunContext) -> PngInfo:
    info = PngInfo()
    info.add_text("prompt", json.dumps(ctx.prompt))
    for key, value in (ctx.extra_data.get("extra_pnginfo") or {}).items():
        info.add_text(key, json.dumps(value))
    return info


def _write_pngs(
    image: ImageValue, folder: Path, filename: str, counter: int, info: PngInfo, compress_level: int
) -> list[str]:
    names = []
    for batch_number in range(image.batch):
        name = (
            f"{filename.replace('%batch_num%', str(batch_number))}_{counter + batch_number:05}_.png"
        )
        Image.new("RGB", (image.width, image.height), image.color).save(
            folder / name, pnginfo=info, compress_level=compress_level
        )
        names.append(name)
    return names


async def _save_images(
    ctx: RunContext, base: Path, type_name: str, prefix_append: str, compress_level: int
) -> NodeResult:
    image = _image(ctx.get("images"))
    prefix = str(ctx.get("filename_prefix", "ComfyUI")) + prefix_append
    folder, filename, counter, subfolder = ctx.folders.save_path(prefix, base)
    names = await asyncio.to_thread(
        _write_pngs, image, folder, filename, counter, _png_info(ctx), compress_level
    )
    return NodeResult((), {"images": [shapes.file_entry(n, subfolder, type_name) for n in names]})


@simulates("SaveImage")
async def save_image(ctx: RunContext) -> NodeResult:
    return await _save_images(ctx, ctx.folders.output, "output", "", 4)


@simulates("PreviewImage")
async def preview_image(ctx: RunContext) -> NodeResult:
    # Each PreviewImage node object draws its own random temp prefix, kept while the node stays.
    prefix = ctx.state.setdefault(
        "prefix_append",
        "_temp_" + "".join(random.choice("abcdefghijklmnopqrstupvxyz") for _ in range(5)),
    )
    if not ctx.get("filename_prefix"):
        ctx.inputs["filename_prefix"] = "ComfyUI"
    return await _save_images(ctx, ctx.folders.temp, "temp", prefix, 1)


def _write_webp(image: ImageValue, path: Path, fps: float, lossless: bool, quality: int) -> None:
    frames = [
        Image.new(
            "RGB", (image.width, image.height), tuple((c + 40 * i) % 256 for c in image.color)
        )
        for i in range(image.batch)
    ]
    frames[0].save(
        path,
        save_all=True,
        append_images=frames[1:],
        duration=int(1000.0 / fps),
        lossless=lossless,
        quality=quality,
    )


@simulates("SaveAnimatedWEBP")
async def save_animated_webp(ctx: RunContext) -> NodeResult:
    image = _image(ctx.get("images"))
    folder, filename, counter, subfolder = ctx.folders.save_path(
        str(ctx.get("filename_prefix")), ctx.folders.output
    )
    name = f"{filename}_{counter:05}_.webp"
    await asyncio.to_thread(
        _write_webp,
        image,
        folder / name,
        float(ctx.get("fps", 6.0)),
        bool(ctx.get("lossless", True)),
        int(ctx.get("quality", 80)),
    )
    return NodeResult(
        (),
        {"images": [shapes.file_entry(name, subfolder, "output")], "animated": [image.batch != 1]},
    )


def _write_latent(latent: LatentValue, path: Path, prompt_json: str) -> None:
    """A safetensors file shaped like ComfyUI's: latent_tensor, latent_format_version_0."""
    size = latent.batch * 4 * latent.height * latent.width * 4
    header = {
        "__metadata__": {"prompt": prompt_json},
        "latent_tensor": {
            "dtype": "F32",
            "shape": [latent.batch, 4, latent.height, latent.width],
            "data_offsets": [0, size],
        },
        "latent_format_version_0": {"dtype": "F32", "shape": [0], "data_offsets": [size, size]},
    }
    encoded = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(encoded)) + encoded + bytes(size))


@simulates("SaveLatent")
async def save_latent(ctx: RunContext) -> NodeResult:
    latent = ctx.get("samples")
    if not isinstance(latent, LatentValue):
        raise TypeError("string indices must be integers, not 'str'")
    folder, filename, counter, subfolder = ctx.folders.save_path(
        str(ctx.get("filename_prefix")), ctx.folders.output
    )
    name = f"{filename}_{counter:05}_.latent"
    await asyncio.to_thread(_write_latent, latent, folder / name, json.dumps(ctx.prompt))
    return NodeResult((), {"latents": [shapes.file_entry(name, subfolder, "output")]})


@simulates("PreviewAny")
async def preview_any(ctx: RunContext) -> NodeResult:
    source = ctx.get("source")
    if isinstance(source, str):
        text = source
    elif isinstance(source, (int, float, bool)):
        text = str(source)
    elif source is None:
        text = "None"
    else:
        try:
            text = json.dumps(source)
        except TypeError:
            text = str(source)
    return NodeResult((), {"text": [text]})


async def placeholder(ctx: RunContext) -> NodeResult:
    """Any other class: one placeholder per declared output, shaped after the inputs."""
    images = [v for v in ctx.inputs.values() if isinstance(v, ImageValue)]
    latents = [v for v in ctx.inputs.values() if isinstance(v, LatentValue)]
    outputs: list[Any] = []
    for type_name in ctx.return_types:
        if type_name == "IMAGE":
            outputs.append(images[0] if images else ImageValue(512, 512))
        elif type_name == "LATENT":
            outputs.append(latents[0] if latents else LatentValue(64, 64))
        elif type_name == "MASK":
            image = images[0] if images else ImageValue(512, 512)
            outputs.append(MaskValue(image.width, image.height, image.batch))
        elif type_name in ("INT", "FLOAT"):
            outputs.append(0)
        elif type_name == "STRING":
            outputs.append("")
        else:
            outputs.append(Opaque(str(type_name)))
    return NodeResult(tuple(outputs))


def simulation(class_type: str) -> Simulation:
    return SIMULATIONS.get(class_type, placeholder)


@dataclass
class InjectedFailure:
    """`fail_next`: the next node matching `target` (a class type or node id) raises."""

    target: str
    exception_type: str
    message: str
    used: bool = field(default=False)

    def matches(self, node_id: str, class_type: str) -> bool:
        return not self.used and self.target in (node_id, class_type)
