import torch

from rtdetr.data import available_cpus, default_num_workers


def test_small_cpu_machines_load_in_the_training_process():
    assert default_num_workers("cpu", cpus=1) == 0
    assert default_num_workers("cpu", cpus=2) == 0
    assert default_num_workers("cpu", cpus=4) == 0


def test_bigger_cpu_machines_use_a_few_workers_shared_by_the_node():
    assert default_num_workers("cpu", cpus=16) == 4
    assert default_num_workers(torch.device("cpu"), cpus=16, processes_per_node=2) == 2
    assert default_num_workers("cpu", cpus=64) == 4


def test_gpu_runs_overlap_loading_with_the_step():
    assert default_num_workers("cuda", cpus=16) == 8
    assert default_num_workers("cuda:1", cpus=16, processes_per_node=8) == 1
    assert default_num_workers("cuda", cpus=2) == 1  # at least one, so loading overlaps the GPU


def test_available_cpus_is_positive():
    assert available_cpus() >= 1
