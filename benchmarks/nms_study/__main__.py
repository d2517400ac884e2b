"""``python -m benchmarks.nms_study [options]``: see :mod:`benchmarks.nms_study.study`."""

from .study import main

raise SystemExit(main())
