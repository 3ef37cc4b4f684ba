"""models.yaml and the placement check: every model where ComfyUI 0.3.64 will look for it."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from services.fleet.manifest import (
    DEFAULT_MANIFEST,
    ManifestError,
    extra_model_paths,
    load_manifest,
    parse_manifest,
)
from services.fleet.placement import check_placement, model_roots
from tests.fleet_helpers import make_blob, manifest_for, write_model


def test_repository_manifest_covers_the_three_model_classes():
    manifest = load_manifest(DEFAULT_MANIFEST)
    files = {m.file for m in manifest.models}
    assert "sd_xl_base_1.0.safetensors" in files  # SDXL-class
    assert "flux1-schnell.safetensors" in files  # Flux-class
    assert "ltxv-2b-0.9.8-distilled-fp8.safetensors" in files  # LTX-class
    for model in manifest.models:
        assert model.url.startswith("https://huggingface.co/")
        assert model.licence and model.size > 100_000_000
    # Flux needs its encoders and VAE in the folders its loaders read.
    folders = {m.file: m.folder for m in manifest.models}
    assert folders["flux1-schnell.safetensors"] == "diffusion_models"
    assert folders["ae.safetensors"] == "vae"
    assert folders["t5xxl_fp8_e4m3fn.safetensors"] == "text_encoders"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"folder": "Stable-diffusion"}, "not a ComfyUI model folder"),
        ({"file": "../escape.safetensors"}, "invalid model file"),
        ({"file": "notes.txt"}, "ComfyUI lists only"),
        ({"sha256": "abc"}, "sha256"),
        ({"url": "http://insecure.example/x"}, "url"),
        ({"size": 0}, "size"),
    ],
)
def test_bad_manifest_entries_are_refused_with_the_entry_named(change, message):
    entry = {
        "file": "a.safetensors",
        "folder": "checkpoints",
        "url": "https://example.org/a",
        "sha256": "0" * 64,
        "size": 1,
        "licence": "MIT",
    }
    with pytest.raises(ManifestError, match=message) as err:
        parse_manifest(yaml.safe_dump({"models": [entry | change]}))
    assert "models.0" in str(err.value)


def test_legacy_folder_names_are_mapped_and_duplicates_refused():
    entry = {
        "file": "a.safetensors",
        "folder": "unet",
        "url": "https://example.org/a",
        "sha256": "0" * 64,
        "size": 1,
        "licence": "MIT",
    }
    assert parse_manifest(yaml.safe_dump({"models": [entry]})).models[0].folder == (
        "diffusion_models"
    )
    twice = [entry, entry | {"folder": "diffusion_models"}]
    with pytest.raises(ManifestError, match="listed twice"):
        parse_manifest(yaml.safe_dump({"models": twice}))


@pytest.fixture
def layout(tmp_path):
    """A manifest of three models, fetched under /models the way the bootstrap lays them out."""
    blobs = [
        make_blob("checkpoints", "sdxl.safetensors", 2048),
        make_blob("diffusion_models", "flux.safetensors", 4096),
        make_blob("text_encoders", "t5.safetensors", 1024),
    ]
    manifest = manifest_for(blobs)
    models = tmp_path / "models"
    config = tmp_path / "extra_model_paths.yaml"
    config.write_text(extra_model_paths(manifest, str(models)))
    return manifest, blobs, models, model_roots(extra_model_paths=config)


def test_all_in_place_through_extra_model_paths(layout):
    manifest, blobs, models, roots = layout
    for blob in blobs:
        write_model(models, blob)
    assert check_placement(manifest, roots) == []


def test_a_model_in_the_wrong_folder_names_the_right_one(layout):
    manifest, blobs, models, roots = layout
    write_model(models, blobs[0])
    write_model(models, blobs[2])
    # The classic: a diffusion model dropped into checkpoints.
    write_model(models, blobs[1], folder="checkpoints")
    (problem,) = check_placement(manifest, roots)
    assert problem.kind == "wrong_folder"
    assert problem.right_folder == "diffusion_models"
    assert problem.found_at == models / "checkpoints" / "flux.safetensors"
    assert "flux.safetensors is in checkpoints" in problem.message
    assert f"move it to {models / 'diffusion_models' / 'flux.safetensors'}" in problem.message


def test_missing_and_truncated_models_are_reported(layout):
    manifest, blobs, models, roots = layout
    write_model(models, blobs[0])
    truncated = models / "text_encoders" / "t5.safetensors"
    truncated.parent.mkdir(parents=True)
    truncated.write_bytes(blobs[2].data[:100])
    problems = {p.file: p for p in check_placement(manifest, roots)}
    assert problems["flux.safetensors"].kind == "missing"
    assert "fetch it to" in problems["flux.safetensors"].message
    assert problems["t5.safetensors"].kind == "wrong_size"
    assert "100 bytes" in problems["t5.safetensors"].message


def test_comfyui_default_and_legacy_directories_count(tmp_path):
    """ComfyUI also reads models/unet for diffusion models and models/clip for encoders."""
    blobs = [
        make_blob("diffusion_models", "flux.safetensors", 512),
        make_blob("text_encoders", "clip_l.safetensors", 256),
    ]
    manifest = manifest_for(blobs)
    comfy = tmp_path / "ComfyUI"
    write_model(comfy / "models", blobs[0], folder="unet")
    write_model(comfy / "models", blobs[1], folder="clip")
    assert check_placement(manifest, model_roots(comfyui_dir=comfy)) == []


def test_check_accepts_a_manifest_path(tmp_path, layout):
    manifest, _blobs, _models, roots = layout
    path = tmp_path / "m.yaml"
    path.write_text(
        yaml.safe_dump({"models": [m.model_dump() for m in manifest.models]}, sort_keys=False)
    )
    assert len(check_placement(path, roots)) == 3
    assert len(check_placement(str(path), roots)) == 3


def test_extra_model_paths_resolves_like_comfyui(tmp_path):
    config = tmp_path / "conf" / "extra.yaml"
    config.parent.mkdir()
    config.write_text(
        "a:\n  base_path: base\n  checkpoints: |\n    ckpt\n    more\n  clip: enc\n"
        "b:\n  vae: /abs/vae\n  loras: rel\n"
    )
    roots = model_roots(extra_model_paths=config)
    base = config.parent / "base"
    assert roots["checkpoints"] == [base / "ckpt", base / "more"]
    assert roots["text_encoders"] == [base / "enc"]  # legacy `clip`
    assert roots["vae"] == [Path("/abs/vae")]
    assert roots["loras"] == [config.parent / "rel"]


def test_folders_agree_with_the_comfyui_protocol_module():
    from services.comfy.catalog import MODEL_FOLDERS
    from services.fleet.placement import COMFYUI_FOLDERS

    assert set(COMFYUI_FOLDERS) <= set(MODEL_FOLDERS)
