from __future__ import annotations

import re

import pytest

from rtdetr.cli import main
from rtdetr.config import PAPER_RESULTS


def test_info_prints_params_gflops_and_shapes(capsys):
    assert main(["info", "rtdetr_r18vd"]) == 0
    text = capsys.readouterr().out
    assert "pred_logits  (1, 300, 80)" in text and "pred_boxes   (1, 300, 4)" in text
    assert "(1, 512, 20, 20)" in text  # S5 of R18


def test_info_table_matches_paper_within_3_percent(capsys):
    # v2 presets share their v1 twin's architecture; one of them is enough to cover the path
    names = [n for n in PAPER_RESULTS if n.startswith("rtdetr_")] + ["rtdetrv2_r18vd"]
    assert main(["info", "--table", *names]) == 0
    rows = re.findall(r"\| (rtdetr\w+) \| ([\d.]+) \| ([\d.]+) \|", capsys.readouterr().out)
    assert {r[0] for r in rows} == set(names)
    for name, params, gflops in rows:
        paper = PAPER_RESULTS.get(name)
        if paper is None:
            continue
        assert float(params) == pytest.approx(paper["params_m"], rel=0.03), name
        assert float(gflops) == pytest.approx(paper["gflops"], rel=0.03), name


def test_info_unknown_model_is_an_error(capsys):
    assert main(["info", "rtdetr_nope"]) == 2
    assert "unknown model" in capsys.readouterr().err


def test_set_values_read_true_false_and_none_in_any_case():
    from rtdetr.config import parse_overrides

    got = parse_overrides(["use_lab=false", "dense_enc_outputs=TRUE", "a=None", "b=null", "n=100", "m=discrete"])
    assert got == {"use_lab": False, "dense_enc_outputs": True, "a": None, "b": None, "n": 100, "m": "discrete"}
