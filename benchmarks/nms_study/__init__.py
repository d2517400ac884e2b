"""The paper's end-to-end speed study (NMS cost, RT-DETR vs YOLO): ``python -m benchmarks.nms_study``.

Modules: ``ops`` (YOLO-style postprocessing, box counting, timing helpers), ``detectors``
(each detector behind preprocess -> forward -> postprocess), ``measure`` (the measurements),
``report`` (tables and plots), ``train`` (the from-scratch training runs it studies) and
``study`` (the command line). Results: ``docs/nms_study.md``.
"""
