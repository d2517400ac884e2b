"""What an exported model says about itself: name, input size, classes, package version.

Every exporter writes the same string-to-string table (ONNX ``metadata_props``,
TorchScript ``_extra_files``, OpenVINO ``rt_info``) and every runtime backend
reads it back with :func:`parse_metadata`, so an exported file can be served
without the Python model that produced it.

Keys (all values are strings):

``model_name``      preset name, e.g. ``"rtdetr_r18vd"``
``imgsz``           square input side S the graph was traced at (``images`` is [B, 3, S, S])
``num_classes``     classes of the score head (labels are contiguous 0..num_classes-1)
``class_names``     JSON list of num_classes names, or ``null`` when unknown
``category_ids``    JSON list mapping contiguous labels to dataset ids, or ``null``
``num_top_queries`` K, detections per image in the outputs
``dynamic_batch``   ``"true"`` / ``"false"``
``precision``       ``"fp32"``, ``"fp16"`` or ``"int8"``
``rtdetr_version``  version of this package that exported the file
``quantization``    JSON object describing an int8 file's scheme, ``null`` otherwise:
                    ``format`` (``"QDQ"`` / ``"QOperator"``), ``activations`` / ``weights``
                    (``"uint8"`` / ``"int8"``), ``weight_bits`` (7 with ``reduce_range``),
                    ``reduce_range``, ``per_channel``, ``calibration``, ``calibration_images``,
                    ``quantized`` (the scopes), ``onnxruntime`` (the quantizer's version) and
                    ``saturation_free_on_avx2`` (see :mod:`rtdetr.export.quantize`)
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from torch import nn

__all__ = ["ExportMetadata", "model_metadata", "parse_metadata"]


@dataclass(frozen=True)
class ExportMetadata:
    """Parsed metadata of an exported detector (see the module docstring for the keys)."""

    model_name: str
    imgsz: int
    num_classes: int
    class_names: list[str] | None = None
    category_ids: list[int] | None = None
    num_top_queries: int | None = None
    dynamic_batch: bool = False
    precision: str = "fp32"
    rtdetr_version: str | None = None
    quantization: dict[str, Any] | None = None

    def to_props(self) -> dict[str, str]:
        """The string table the exporters write."""
        return {
            "model_name": self.model_name,
            "imgsz": str(self.imgsz),
            "num_classes": str(self.num_classes),
            "class_names": json.dumps(self.class_names),
            "category_ids": json.dumps(self.category_ids),
            "num_top_queries": str(self.num_top_queries) if self.num_top_queries is not None else "",
            "dynamic_batch": "true" if self.dynamic_batch else "false",
            "precision": self.precision,
            "rtdetr_version": self.rtdetr_version or "",
            "quantization": json.dumps(self.quantization, sort_keys=True),
        }

    def with_precision(self, precision: str) -> ExportMetadata:
        return replace(self, precision=precision)

    def with_quantization(self, quantization: Mapping[str, Any] | None) -> ExportMetadata:
        """A copy describing an int8 file (``precision="int8"``) quantized as ``quantization`` says."""
        return replace(
            self,
            precision="int8" if quantization is not None else self.precision,
            quantization=dict(quantization) if quantization is not None else None,
        )


def _as_list(value: Any) -> list | None:
    if value is None:
        return None
    return [v.item() if hasattr(v, "item") else v for v in value]


def model_metadata(
    model: nn.Module,
    *,
    imgsz: int,
    dynamic_batch: bool = False,
    precision: str = "fp32",
    class_names: list[str] | None = None,
) -> ExportMetadata:
    """Metadata of a built :class:`~rtdetr.RTDETR` (needs ``model.config``).

    ``class_names`` defaults to ``model.class_names``; a list of the wrong length
    is an error (it would mislabel every detection).
    """
    from .. import __version__

    cfg = getattr(model, "config", None)
    if cfg is None:
        raise ValueError("model has no .config: build it with rtdetr.build_model or model_from_checkpoint")
    names = class_names if class_names is not None else getattr(model, "class_names", None)
    names = [str(n) for n in names] if names is not None else None
    if names is not None and len(names) != cfg.num_classes:
        raise ValueError(f"class_names has {len(names)} entries but the model has {cfg.num_classes} classes")
    ids = _as_list(getattr(model, "category_ids", None))
    if ids is not None and len(ids) != cfg.num_classes:
        ids = None  # a mismatched table cannot be applied; drop it rather than mislabel
    return ExportMetadata(
        model_name=cfg.name,
        imgsz=int(imgsz),
        num_classes=int(cfg.num_classes),
        class_names=names,
        category_ids=[int(i) for i in ids] if ids is not None else None,
        num_top_queries=int(cfg.num_top_queries),
        dynamic_batch=bool(dynamic_batch),
        precision=precision,
        rtdetr_version=__version__,
    )


def parse_metadata(props: Mapping[str, str], *, source: str = "model") -> ExportMetadata:
    """Read the table written by :meth:`ExportMetadata.to_props`.

    Args:
        props: key -> string value (e.g. onnxruntime's ``custom_metadata_map``).
        source: file name used in error messages.

    Raises:
        ValueError: a required key (``imgsz``, ``num_classes``) is missing or unreadable,
            naming the file and the key; such a file was not written by ``rtdetr export``.
    """

    def required_int(key: str) -> int:
        if key not in props:
            raise ValueError(
                f"{source}: metadata key {key!r} is missing; export the model with `rtdetr export` "
                f"(found keys: {sorted(props) or 'none'})"
            )
        try:
            return int(props[key])
        except ValueError:
            raise ValueError(f"{source}: metadata {key!r} should be an integer, got {props[key]!r}") from None

    def json_list(key: str) -> list | None:
        raw = props.get(key)
        if not raw:
            return None
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            raise ValueError(f"{source}: metadata {key!r} is not valid JSON: {raw[:80]!r}") from None
        if value is not None and not isinstance(value, list):
            raise ValueError(f"{source}: metadata {key!r} should be a JSON list or null, got {type(value).__name__}")
        return value

    num_classes = required_int("num_classes")
    names = json_list("class_names")
    if names is not None and len(names) != num_classes:
        raise ValueError(f"{source}: metadata class_names has {len(names)} entries, num_classes is {num_classes}")
    ids = json_list("category_ids")
    top = props.get("num_top_queries")
    quantization = None
    if props.get("quantization"):  # files written before this key existed have none
        try:
            quantization = json.loads(props["quantization"])
        except json.JSONDecodeError:
            raise ValueError(
                f"{source}: metadata 'quantization' is not valid JSON: {props['quantization'][:80]!r}"
            ) from None
        if quantization is not None and not isinstance(quantization, dict):
            raise ValueError(f"{source}: metadata 'quantization' should be a JSON object or null")
    return ExportMetadata(
        model_name=props.get("model_name", "unknown"),
        imgsz=required_int("imgsz"),
        num_classes=num_classes,
        class_names=[str(n) for n in names] if names is not None else None,
        category_ids=[int(i) for i in ids] if ids is not None else None,
        num_top_queries=int(top) if top else None,
        dynamic_batch=props.get("dynamic_batch", "false").lower() == "true",
        precision=props.get("precision", "fp32"),
        rtdetr_version=props.get("rtdetr_version") or None,
        quantization=quantization,
    )
