"""``model.safetensors``: the final model as packed values plus its mask.

The file stores exactly what the wire would carry (``packed``: kept values in
canonical order) and the mask as one bool tensor per prunable tensor, with the
layout in the metadata, so :func:`load_model` rebuilds the dense state without
the code that trained it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from fedmap.core.layout import Layout
from fedmap.core.mask import Mask, pack, unpack
from fedmap.errors import DataError, ProtocolError


def save_model(path: Path, values: torch.Tensor, mask: Mask, metadata: dict[str, str]) -> None:
    """Write packed values and mask atomically (temp file + rename)."""
    layout = mask.layout
    named = mask.to_dict()
    tensors = {"packed": pack(values, mask).contiguous()}
    for name, prunable in zip(layout.names, layout.prunable, strict=True):
        if prunable:
            tensors[f"mask.{name}"] = named[name].contiguous()
    meta = dict(metadata)
    meta["layout"] = json.dumps(
        {"names": layout.names, "shapes": layout.shapes, "prunable": layout.prunable}
    )
    tmp = path.with_suffix(".tmp")
    save_file(tensors, str(tmp), metadata=meta)
    os.replace(tmp, path)


def load_model(path: Path) -> tuple[dict[str, torch.Tensor], Mask, dict[str, str]]:
    """Return the dense state (pruned entries 0.0), the mask and the metadata."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = dict(handle.metadata() or {})
        tensors = load_file(str(path))
        spec = json.loads(metadata["layout"])
        layout = Layout(
            tuple(spec["names"]), tuple(tuple(s) for s in spec["shapes"]), tuple(spec["prunable"])
        )
        flat = torch.ones(layout.numel, dtype=torch.bool)
        for i, (name, prunable) in enumerate(zip(layout.names, layout.prunable, strict=True)):
            if prunable:
                flat[layout.slice_of(i)] = tensors[f"mask.{name}"].reshape(-1)
        mask = Mask(layout, flat)
    except (OSError, KeyError, ValueError, TypeError, SafetensorError, ProtocolError) as error:
        raise DataError(f"{path}: not a fedmap model file ({error})") from error
    values = unpack(tensors["packed"], mask)
    return {k: v.clone() for k, v in layout.unflatten(values).items()}, mask, metadata
