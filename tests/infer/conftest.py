import pytest
import torch


@pytest.fixture(scope="module")
def detector():
    """The smallest preset at 256 px with fixed random weights (fast; scores are not meaningful)."""
    from rtdetr.infer import Detector

    torch.manual_seed(0)
    torch.set_flush_denormal(True)
    # fp32: the tests compare it with the plain model (precision "auto" is bf16 on AMX CPUs)
    return Detector.from_pretrained("rtdetrv2_hgnetv2_n", num_classes=5, imgsz=256, precision="fp32")
