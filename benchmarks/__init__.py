"""Benchmark scripts of rtdetr, run from the repository root as ``python -m benchmarks.NAME``.

A package so that scripts share modules (``hf_reference``, the ``nms_study`` package) by
ordinary imports; see ``benchmarks/README.md`` for what each one measures.
"""
