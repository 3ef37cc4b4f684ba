"""This worker's ComfyUI node catalogue (`/object_info`), with its file inputs indexed.

Which inputs are upload widgets and which list model files is derived by walking every node
class (~500, ~15 ms): done once per catalogue, not for every job."""

from __future__ import annotations

from dataclasses import dataclass, field

from services.comfy import catalog as cat


@dataclass(frozen=True)
class NodeCatalog:
    nodes: cat.Catalog = field(default_factory=dict)
    #: class type -> the names of its upload widgets (a participant's files)
    uploads: dict[str, tuple[str, ...]] = field(default_factory=dict)
    #: class type -> the names of its model file inputs (`ckpt_name`, ...)
    models: dict[str, tuple[str, ...]] = field(default_factory=dict)

    @classmethod
    def of(cls, nodes: cat.Catalog) -> NodeCatalog:
        uploads: dict[str, list[str]] = {}
        models: dict[str, list[str]] = {}
        for item in cat.file_inputs(nodes):
            target = models if item.kind.startswith("model:") else uploads
            target.setdefault(item.class_type, []).append(item.input_name)
        return cls(
            nodes,
            {k: tuple(v) for k, v in uploads.items()},
            {k: tuple(v) for k, v in models.items()},
        )

    @property
    def model_input_names(self) -> set[str]:
        return {name for names in self.models.values() for name in names}
