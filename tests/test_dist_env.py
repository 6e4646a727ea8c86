"""Each launcher's environment maps onto one LaunchEnv."""

from lottery.dist import read_launch_env


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
    env = {
        "SLURM_PROCID": "5",
        "SLURM_NTASKS": "8",
        "SLURM_LOCALID": "1",
        "SLURM_NTASKS_PER_NODE": "4",
        "SLURM_JOB_ID": "1234",
        "MASTER_ADDR": "node-001",
    }
    launch = read_launch_env(env)
    assert (launch.rank, launch.local_rank, launch.world_size, launch.local_world_size) == (5, 1, 8, 4)
    assert launch.master_addr == "node-001"
    assert launch.master_port == 20000 + 1234 % 20000
    assert launch.launcher == "srun"


def test_no_launcher_is_a_single_process():
    launch = read_launch_env({})
    assert (launch.rank, launch.world_size, launch.launcher) == (0, 1, "none")
