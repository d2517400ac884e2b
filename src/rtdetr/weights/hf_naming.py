"""State-dict key names: ours (= the reference's v1 naming) <-> transformers' ``RTDetrForObjectDetection``.

Two Hugging Face spellings exist:

- ``"v4"``: the checkpoint-file spelling: the published ``PekingU/rtdetr_*`` files
  (transformers 4.x) and what transformers 5's ``save_pretrained`` still writes (it renames
  back on save): AIFI under ``model.encoder.encoder.N``, ``self_attn.out_proj``, ``fc1`` /
  ``fc2``; published files may also repeat the heads at the top level (``class_embed.N``,
  ``bbox_embed.N``, tied to ``model.decoder.class_embed.N`` ...).
- ``"v5"``: transformers 5.x module names (``model.state_dict()``): ``model.encoder.aifi.N``,
  ``self_attn.o_proj``, ``mlp.fc1`` / ``mlp.fc2``. Transformers 5 renames v4 keys on load.

Both spellings split attention input projections into ``q_proj`` / ``k_proj`` / ``v_proj``;
ours keep PyTorch's packed ``in_proj_weight`` / ``in_proj_bias`` (rows ordered q, k, v).
Each rule below is a pair of templates read in both directions; ``{slot}`` fields
match numbers, a fixed set of words (mapped between the two sides), or the rest of a key.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

__all__ = ["HFNaming", "to_hf_state_dict", "from_hf_state_dict", "is_hf_state_dict", "hf_naming_of"]

HFNaming = Literal["v4", "v5"]

# slot -> {our word: HF word}; slots not listed here match digits, "rest" matches the remainder.
_WORDS: dict[str, dict[str, str]] = {
    "stem": {"conv1_1": "0", "conv1_2": "1", "conv1_3": "2"},
    "cn": {"conv": "convolution", "norm": "normalization"},
    "branch": {"branch2a": "0", "branch2b": "1", "branch2c": "2"},
    "lin": {"linear1": "fc1", "linear2": "fc2"},
    "enorm": {"norm1": "self_attn_layer_norm", "norm2": "final_layer_norm"},
    "dnorm": {"norm1": "self_attn_layer_norm", "norm2": "encoder_attn_layer_norm", "norm3": "final_layer_norm"},
    "pn": {"conv": "0", "norm": "1"},
    "ccff": {k: k for k in ("lateral_convs", "fpn_blocks", "downsample_convs", "pan_blocks")},
    "enchead": {k: k for k in ("enc_output", "enc_score_head", "enc_bbox_head")},
    "qkv": {"q": "q", "k": "k", "v": "v"},
    "wb": {"weight": "weight", "bias": "bias"},
}
_HF_STEM = "model.backbone.model.embedder.embedder"
_HF_LAYER = "model.backbone.model.encoder.stages.{s}.layers.{b}"
_OUR_BLOCK = "backbone.res_layers.{s}.blocks.{b}"
_RULE_TEMPLATES: list[tuple[str, str]] = [
    ("backbone.conv1.{stem}.{cn}.{rest}", _HF_STEM + ".{stem}.{cn}.{rest}"),
    # the vd shortcut (avg-pool, then conv) must be tried before the plain one
    (_OUR_BLOCK + ".short.conv.{cn}.{rest}", _HF_LAYER + ".shortcut.1.{cn}.{rest}"),
    (_OUR_BLOCK + ".short.{cn}.{rest}", _HF_LAYER + ".shortcut.{cn}.{rest}"),
    (_OUR_BLOCK + ".{branch}.{cn}.{rest}", _HF_LAYER + ".layer.{branch}.{cn}.{rest}"),
    ("encoder.input_proj.{rest}", "model.encoder_input_proj.{rest}"),
    (
        "encoder.encoder.{i}.layers.{j}.self_attn.out_proj.{rest}",
        "model.encoder.aifi.{i}.layers.{j}.self_attn.o_proj.{rest}",
    ),
    ("encoder.encoder.{i}.layers.{j}.{lin}.{rest}", "model.encoder.aifi.{i}.layers.{j}.mlp.{lin}.{rest}"),
    ("encoder.encoder.{i}.layers.{j}.{enorm}.{rest}", "model.encoder.aifi.{i}.layers.{j}.{enorm}.{rest}"),
    ("encoder.{ccff}.{rest}", "model.encoder.{ccff}.{rest}"),
    ("decoder.input_proj.{i}.{pn}.{rest}", "model.decoder_input_proj.{i}.{pn}.{rest}"),
    ("decoder.decoder.layers.{i}.self_attn.out_proj.{rest}", "model.decoder.layers.{i}.self_attn.o_proj.{rest}"),
    ("decoder.decoder.layers.{i}.cross_attn.{rest}", "model.decoder.layers.{i}.encoder_attn.{rest}"),
    ("decoder.decoder.layers.{i}.{lin}.{rest}", "model.decoder.layers.{i}.mlp.{lin}.{rest}"),
    ("decoder.decoder.layers.{i}.{dnorm}.{rest}", "model.decoder.layers.{i}.{dnorm}.{rest}"),
    ("decoder.denoising_class_embed.{rest}", "model.denoising_class_embed.{rest}"),
    ("decoder.tgt_embed.{rest}", "model.weight_embedding.{rest}"),
    ("decoder.query_pos_head.{rest}", "model.decoder.query_pos_head.{rest}"),
    ("decoder.{enchead}.{rest}", "model.{enchead}.{rest}"),
    ("decoder.dec_score_head.{i}.{rest}", "model.decoder.class_embed.{i}.{rest}"),
    ("decoder.dec_bbox_head.{i}.{rest}", "model.decoder.bbox_embed.{i}.{rest}"),
]
# Packed attention projections: one of our keys <-> three HF keys (slot "qkv").
_PACKED_TEMPLATES: list[tuple[str, str]] = [
    (
        "encoder.encoder.{i}.layers.{j}.self_attn.in_proj_{wb}",
        "model.encoder.aifi.{i}.layers.{j}.self_attn.{qkv}_proj.{wb}",
    ),
    ("decoder.decoder.layers.{i}.self_attn.in_proj_{wb}", "model.decoder.layers.{i}.self_attn.{qkv}_proj.{wb}"),
]
# transformers 4.x spelling <-> 5.x spelling (applied to whole HF keys)
_V4_TO_V5 = [
    (re.compile(r"^model\.encoder\.encoder\.(\d+)\.layers\."), r"model.encoder.aifi.\1.layers."),
    (re.compile(r"\.self_attn\.out_proj\."), ".self_attn.o_proj."),
    (re.compile(r"\.layers\.(\d+)\.fc([12])\."), r".layers.\1.mlp.fc\2."),
    (re.compile(r"^(class_embed|bbox_embed)\."), r"model.decoder.\1."),
]
_V5_TO_V4 = [
    (re.compile(r"^model\.encoder\.aifi\.(\d+)\.layers\."), r"model.encoder.encoder.\1.layers."),
    (re.compile(r"\.self_attn\.o_proj\."), ".self_attn.out_proj."),
    (re.compile(r"\.layers\.(\d+)\.mlp\.fc([12])\."), r".layers.\1.fc\2."),
]


_V2_LAYOUT = re.compile(
    r"^encoder\.input_proj\.\d+\.(conv|norm)\.|^decoder\.enc_output\.(proj|norm)\.|num_points_scale$"
)


@dataclass(frozen=True)
class _Template:
    text: str
    side: int  # 0: ours, 1: HF

    def regex(self) -> re.Pattern[str]:
        out, pos = [], 0
        for m in re.finditer(r"\{(\w+)\}", self.text):
            out.append(re.escape(self.text[pos : m.start()]))
            slot = m.group(1)
            if slot == "rest":
                pat = r".+"
            elif slot in _WORDS:
                words = [pair[self.side] for pair in _WORDS[slot].items()]
                pat = "|".join(re.escape(w) for w in sorted(words, key=len, reverse=True))
            else:
                pat = r"\d+"
            out.append(f"(?P<{slot}>{pat})")
            pos = m.end()
        out.append(re.escape(self.text[pos:]))
        return re.compile("^" + "".join(out) + "$")


class _Rule:
    """A pair of templates; converts a key matching one side into the other side's spelling."""

    def __init__(self, ours: str, hf: str) -> None:
        self.templates = (ours, hf)
        self.patterns = (_Template(ours, 0).regex(), _Template(hf, 1).regex())

    def convert(self, key: str, src: int) -> tuple[str, dict[str, str]] | None:
        m = self.patterns[src].match(key)
        if m is None:
            return None
        slots = m.groupdict()
        mapped = {}
        for slot, value in slots.items():
            if slot in _WORDS:
                table = _WORDS[slot] if src == 0 else {v: k for k, v in _WORDS[slot].items()}
                value = table[value]
            mapped[slot] = value
        return self.templates[1 - src].format(**mapped), slots


_RULES = [_Rule(o, h) for o, h in _RULE_TEMPLATES]
_PACKED = [_Rule(o, h) for o, h in _PACKED_TEMPLATES]


def _sub_all(key: str, table: list[tuple[re.Pattern[str], str]]) -> str:
    for pattern, repl in table:
        key = pattern.sub(repl, key)
    return key


def is_hf_state_dict(keys: Mapping[str, object] | list[str]) -> bool:
    """True when the keys use transformers' naming (``model.backbone.`` ... or top-level heads)."""
    keys = list(keys)
    hf = sum(k.startswith("model.") or k.startswith(("class_embed.", "bbox_embed.")) for k in keys)
    return bool(keys) and hf > len(keys) // 2


def hf_naming_of(keys: Mapping[str, object] | list[str]) -> HFNaming:
    """Which transformers spelling a HF state dict uses."""
    v4 = re.compile(r"^model\.encoder\.encoder\.|\.self_attn\.out_proj\.|\.layers\.\d+\.fc[12]\.")
    return "v4" if any(v4.search(k) for k in keys) else "v5"


def to_hf_state_dict(state_dict: Mapping[str, Tensor], *, naming: HFNaming = "v4") -> dict[str, Tensor]:
    """Our (reference) naming -> transformers naming; packed q/k/v projections are split.

    ``num_batches_tracked`` entries are kept where the HF module has them (plain BatchNorm).
    Raises ValueError for keys without a HF equivalent (e.g. a deployed/fused model or a
    backbone transformers' RT-DETR does not have).
    """
    if naming not in ("v4", "v5"):
        raise ValueError(f"naming must be 'v4' or 'v5', got {naming!r}")
    v2 = [k for k in state_dict if _V2_LAYOUT.search(k)]
    if v2:
        raise ValueError(
            f"RT-DETRv2 checkpoint layout ({v2[0]}); transformers' RTDetrForObjectDetection holds v1 models only"
        )
    out: dict[str, Tensor] = {}
    unmapped = []
    for key, value in state_dict.items():
        if re.search(r"\.bottlenecks\.\d+\.conv\.", key):
            raise ValueError(
                f"{key!r} belongs to a deployed (RepVGG-fused) model; convert the weights saved before model.deploy()"
            )
        for rule in _PACKED:
            m = rule.patterns[0].match(key)
            if m is None:
                continue
            for name, chunk in zip("qkv", value.chunk(3, dim=0)):
                out[rule.templates[1].format(qkv=name, **m.groupdict())] = chunk.clone()
            break
        else:
            for rule in _RULES:
                hit = rule.convert(key, 0)
                if hit is not None:
                    out[hit[0]] = value
                    break
            else:
                unmapped.append(key)
    if unmapped:
        raise ValueError(
            f"{len(unmapped)} key(s) have no transformers RT-DETR equivalent, e.g. {', '.join(unmapped[:5])}"
        )
    if naming == "v4":
        out = {_sub_all(k, _V5_TO_V4): v for k, v in out.items()}
    return out


def from_hf_state_dict(state_dict: Mapping[str, Tensor]) -> tuple[dict[str, Tensor], list[str]]:
    """Transformers naming (v4 or v5) -> ours; q/k/v projections are re-packed into ``in_proj_*``.

    Returns (state dict in our naming, HF keys that have no equivalent). Duplicated
    top-level heads (``class_embed.N`` next to ``model.decoder.class_embed.N``) collapse
    into one entry.
    """
    v5: dict[str, Tensor] = {}
    for key, value in state_dict.items():
        v5.setdefault(_sub_all(key, _V4_TO_V5), value)
    out: dict[str, Tensor] = {}
    packed: dict[str, dict[str, Tensor]] = {}
    unmapped = []
    for key, value in v5.items():
        for rule in _PACKED:
            hit = rule.convert(key, 1)
            if hit is not None:
                ours, slots = hit
                packed.setdefault(ours, {})[slots["qkv"]] = value
                break
        else:
            for rule in _RULES:
                hit = rule.convert(key, 1)
                if hit is not None:
                    out[hit[0]] = value
                    break
            else:
                unmapped.append(key)
    for key, parts in packed.items():
        if set(parts) != {"q", "k", "v"}:
            unmapped.extend(f"{key} ({p} only)" for p in sorted(parts))
            continue
        out[key] = torch.cat([parts["q"], parts["k"], parts["v"]], dim=0)
    return out, unmapped
