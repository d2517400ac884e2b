"""State-dict layouts of the reference checkpoints: v1 (rtdetr_pytorch) and v2 (rtdetrv2_pytorch).

The two reference code bases name a few modules differently and v2 keeps some
derived tensors as persistent buffers:

=============================  ==========================  ============================
what                           v1 keys                     v2 keys
=============================  ==========================  ============================
encoder input projection i     ``input_proj.i.0 / .1``     ``input_proj.i.conv / .norm``
decoder ``enc_output``         ``enc_output.0 / .1``       ``enc_output.proj / .norm``
eval-size anchors, valid mask  (not stored)                ``decoder.anchors / valid_mask``
per-point offset scale         (not stored)                ``cross_attn.num_points_scale``
=============================  ==========================  ============================

A model is built in one layout (its ``state_dict()`` is that layout) and its
load-state-dict pre-hooks accept the other: keys are renamed, and a derived
buffer missing from the checkpoint keeps the model's own value, while one the
model does not store is dropped. The hooks are per module, so loading into a
sub-module (``model.decoder.load_state_dict(...)``) works as well.
"""

from __future__ import annotations

import logging
import re
from collections import OrderedDict
from typing import Any, Literal

from torch import nn

__all__ = ["CheckpointLayout", "LAYOUTS", "child_names", "named_pair", "install_layout_hook"]

log = logging.getLogger(__name__)

CheckpointLayout = Literal["v1", "v2"]
LAYOUTS: tuple[str, ...] = ("v1", "v2")

# Children of the two-module Sequentials whose names differ between layouts.
_CHILD_NAMES: dict[str, dict[str, tuple[str, str]]] = {
    "encoder_input_proj": {"v1": ("0", "1"), "v2": ("conv", "norm")},
    "enc_output": {"v1": ("0", "1"), "v2": ("proj", "norm")},
}


def child_names(kind: str, layout: CheckpointLayout) -> tuple[str, str]:
    """The two child names of a ``kind`` Sequential ("encoder_input_proj" or "enc_output")."""
    if layout not in LAYOUTS:
        raise ValueError(f"checkpoint_layout must be one of {LAYOUTS}, got {layout!r}")
    return _CHILD_NAMES[kind][layout]


def named_pair(names: tuple[str, str], first: nn.Module, second: nn.Module) -> nn.Sequential:
    """``nn.Sequential`` of two modules under the given child names (same forward in every layout)."""
    return nn.Sequential(OrderedDict(zip(names, (first, second))))


def install_layout_hook(
    module: nn.Module,
    *,
    kind: str | None = None,
    container: str | None = None,
    derived_buffers: tuple[str, ...] = (),
) -> None:
    """Make ``module.load_state_dict`` accept both layouts.

    Args:
        module: the module owning the renamed children and / or the buffers.
        kind: a key of the child-name table; with ``container`` (the attribute
            holding the Sequential(s), e.g. "input_proj" for a ModuleList of them
            or "enc_output" for one), keys in any other layout are renamed to
            the module's own names, which are read from the module itself.
        derived_buffers: buffers of ``module`` computed from its config (not learned).
            Persistent in the module and absent from the checkpoint: the module's
            value is kept. Present in the checkpoint but not stored by the module
            (non-persistent): dropped. Present with another shape (a checkpoint
            made for another eval size): dropped with a warning, the module's value kept.
    """
    renames: list[tuple[re.Pattern, str]] = []
    if kind is not None:
        assert container is not None
        held = getattr(module, container)
        target = _own_child_names(held)
        # container.<src>.rest for one Sequential, container.<idx>.<src>.rest for a ModuleList of them
        index = r"\d+\." if isinstance(held, nn.ModuleList) else ""
        for layout in LAYOUTS:
            source = _CHILD_NAMES[kind][layout]
            if source == target:
                continue
            for src, dst in zip(source, target):
                pattern = re.compile(rf"^({re.escape(container)}\.{index}){re.escape(src)}\.")
                renames.append((pattern, rf"\g<1>{dst}."))

    module.register_load_state_dict_pre_hook(_LayoutHook(renames, tuple(derived_buffers)))


class _LayoutHook:
    """The load-state-dict pre-hook (a class, not a closure, so modules stay picklable)."""

    def __init__(self, renames: list[tuple[re.Pattern, str]], derived_buffers: tuple[str, ...]) -> None:
        self.renames = renames
        self.derived_buffers = derived_buffers

    def __call__(self, mod: nn.Module, state_dict: dict[str, Any], prefix: str, *_args: Any) -> None:
        if self.renames:
            for key in [k for k in state_dict if k.startswith(prefix)]:
                local = key[len(prefix) :]
                for pattern, repl in self.renames:
                    new_local, n = pattern.subn(repl, local)
                    if n:
                        state_dict[prefix + new_local] = state_dict.pop(key)
                        break
        for name in self.derived_buffers:
            key = prefix + name
            own = mod._buffers.get(name)
            stored = own is not None and name not in mod._non_persistent_buffers_set
            if not stored:
                state_dict.pop(key, None)
            elif key not in state_dict:
                state_dict[key] = own.detach().clone()
            elif tuple(state_dict[key].shape) != tuple(own.shape):
                # Derived from the eval size and rebuilt for this model's: another size is expected
                # (a checkpoint trained at 320 px loaded for 640), not a problem worth a warning.
                log.debug(
                    "ignoring %s of shape %s from the checkpoint (this model's is %s: another eval size)",
                    key,
                    tuple(state_dict[key].shape),
                    tuple(own.shape),
                )
                state_dict[key] = own.detach().clone()


def _own_child_names(container: nn.Module) -> tuple[str, str]:
    seq = container[0] if isinstance(container, nn.ModuleList) else container
    names = tuple(seq._modules)
    if len(names) != 2:
        raise ValueError(f"expected a two-module Sequential, got children {names}")
    return names  # type: ignore[return-value]
