"""Each launcher's environment maps onto one LaunchEnv, and each rank onto the GPU it drives."""

import os

import pytest
import torch

from lottery import dist
from lottery.dist import cuda_device_index, exported_env, read_launch_env

SRUN_LOCAL_RANK_1 = {
    "SLURM_PROCID": "5",
    "SLURM_NTASKS": "8",
    "SLURM_LOCALID": "1",
    "SLURM_NTASKS_PER_NODE": "4",
    "SLURM_JOB_ID": "1234",
    "MASTER_ADDR": "node-001",
}


def test_torchrun_environment():
    env = {
        "RANK": "3",
        "WORLD_SIZE": "4",
        "LOCAL_RANK": "1",
        "LOCAL_WORLD_SIZE": "2",
        "MASTER_ADDR": "n1",
        "MASTER_PORT": "1234",
    }
    launch = read_launch_env(env)
    assert (launch.rank, launch.local_rank, launch.world_size, launch.local_world_size) == (3, 1, 4, 2)
    assert (launch.master_addr, launch.master_port, launch.launcher) == ("n1", 1234, "torchrun")


def test_deepspeed_launcher_is_recognised():
    env = {
        "RANK": "0",
        "WORLD_SIZE": "2",
        "LOCAL_RANK": "0",
        "CROSS_RANK": "0",
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": "29500",
    }
    assert read_launch_env(env).launcher == "deepspeed"


def test_srun_environment_with_exported_master():
    launch = read_launch_env(SRUN_LOCAL_RANK_1)
    assert (launch.rank, launch.local_rank, launch.world_size, launch.local_world_size) == (5, 1, 8, 4)
    assert launch.master_addr == "node-001"
    assert launch.master_port == 20000 + 1234 % 20000
    assert launch.launcher == "srun"


def test_no_launcher_is_a_single_process():
    launch = read_launch_env({})
    assert (launch.rank, launch.world_size, launch.launcher) == (0, 1, "none")


def test_a_rank_that_sees_every_gpu_of_the_node_drives_its_local_rank():
    assert cuda_device_index(3, 8) == 3  # torchrun / deepspeed on an 8-GPU node


def test_a_task_that_sees_one_gpu_drives_it_whatever_its_local_rank():
    assert cuda_device_index(1, 1) == 0  # srun --gpus-per-task=1, second task of the node


def test_the_first_rank_on_one_gpu_drives_it():
    assert cuda_device_index(0, 1) == 0


def test_more_ranks_on_a_node_than_its_gpus_is_refused_with_the_fix():
    with pytest.raises(RuntimeError) as refused:
        cuda_device_index(2, 2, "0,1")
    message = str(refused.value)
    assert "local rank 2 (LOCAL_RANK / SLURM_LOCALID)" in message
    assert "sees only 2 GPUs (CUDA_VISIBLE_DEVICES='0,1')" in message
    assert "--ntasks-per-node=2" in message and "--gpus-per-task=1" in message


def test_no_visible_gpu_is_refused():
    with pytest.raises(RuntimeError, match="no GPU visible to this process"):
        cuda_device_index(0, 0, "")


def test_deepspeed_is_told_the_gpu_ordinal_as_local_rank():
    launch = read_launch_env(SRUN_LOCAL_RANK_1)
    assert exported_env(launch, 0) == {
        "LOTTERY_LAUNCHED_BY": f"{os.getpid()}:srun",
        "RANK": "5",
        "LOCAL_RANK": "0",
        "WORLD_SIZE": "8",
        "LOCAL_WORLD_SIZE": "4",
        "MASTER_ADDR": "node-001",
        "MASTER_PORT": str(20000 + 1234 % 20000),
    }


def test_a_second_read_in_the_same_process_still_names_the_launcher_that_started_it():
    """Our own RANK/WORLD_SIZE exports must not make an srun task call itself a torchrun one."""
    launch = read_launch_env(SRUN_LOCAL_RANK_1)
    again = read_launch_env({**SRUN_LOCAL_RANK_1, **exported_env(launch, None)})
    assert again == launch
    child = {**SRUN_LOCAL_RANK_1, **exported_env(launch, None), "LOTTERY_LAUNCHED_BY": "1:srun"}
    assert read_launch_env(child).launcher == "torchrun"  # another process's mark is not ours


def test_without_a_gpu_local_rank_stays_the_rank_on_the_node():
    assert exported_env(read_launch_env(SRUN_LOCAL_RANK_1), None)["LOCAL_RANK"] == "1"


def test_init_puts_an_srun_task_that_sees_one_gpu_on_cuda_0(monkeypatch):
    """The wiring of dist.init on a faked GPU: no CUDA call happens, the process group counts as up."""
    for key in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.setenv(key, "restored after the test")
        monkeypatch.delenv(key)
    for key, value in {**SRUN_LOCAL_RANK_1, "CUDA_VISIBLE_DEVICES": "3"}.items():
        monkeypatch.setenv(key, value)
    chosen = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "set_device", chosen.append)
    monkeypatch.setattr(dist.dist, "is_initialized", lambda: True)
    launch = dist.init()
    assert chosen == [0]
    assert launch.local_rank == 1 and dist.os.environ["LOCAL_RANK"] == "0"
