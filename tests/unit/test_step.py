"""The shared optimiser step (lottery/train/step.py): grad_accum micro-batches, each cast, kept and stepped."""

from __future__ import annotations

import torch

from lottery.train.step import optimizer_step


class _Engine:
    """Records what the step does, in order, the way a DeepSpeed engine is driven."""

    device = torch.device("cpu")

    def __init__(self) -> None:
        self.calls: list[str] = []

    def __call__(self, batch: dict, objective: str):
        self.calls.append(f"forward {objective} {batch['img_feat'].dtype}")
        return batch["img_feat"].float().sum(), None

    def backward(self, loss) -> None:
        self.calls.append("backward")

    def step(self) -> None:
        self.calls.append("step")


class _Enforcer:
    def __init__(self, engine: _Engine) -> None:
        self.engine = engine

    def before_step(self) -> None:
        self.engine.calls.append("keep mask")


def test_each_micro_batch_is_drawn_when_needed_cast_kept_and_stepped():
    engine = _Engine()

    def micro_batches():
        for index in range(3):
            engine.calls.append(f"collate {index}")
            yield {"img_feat": torch.full((2,), float(index)), "targets": torch.zeros(2)}, f"task{index}"

    losses = optimizer_step(engine, _Enforcer(engine), micro_batches(), torch.bfloat16, step=1)
    assert losses == [("task0", 0.0), ("task1", 2.0), ("task2", 4.0)]
    per_micro = ["forward {} torch.bfloat16", "backward", "keep mask", "step"]
    assert engine.calls == [
        call.format(f"task{i}") if "{}" in call else call
        for i in range(3)
        for call in [f"collate {i}", *per_micro]
    ]


def test_without_a_ticket_there_is_nothing_to_keep():
    engine = _Engine()
    optimizer_step(engine, None, iter([({"img_feat": torch.ones(1)}, "mlm")]), torch.float32, step=1)
    assert engine.calls == ["forward mlm torch.float32", "backward", "step"]


def test_a_stop_signal_is_held_until_the_step_boundary_and_the_old_handler_comes_back(monkeypatch):
    import os
    import signal

    from lottery.train import step
    from lottery.train.step import Preempted, StopRequest

    monkeypatch.setattr(step, "_received", [])
    before = signal.getsignal(signal.SIGUSR1)
    with StopRequest() as stop:
        assert stop.agreed() is None
        os.kill(os.getpid(), signal.SIGUSR1)  # the process goes on: the signal is only noted
        assert stop.agreed() == "SIGUSR1"
    assert signal.getsignal(signal.SIGUSR1) is before
    assert "stopped after step 7 on SIGUSR1: its checkpoint is written" in str(Preempted(7, "SIGUSR1"))


def test_the_cli_catches_stop_signals_for_training_commands_from_the_start(monkeypatch):
    from lottery import cli, cli_commands
    from lottery.train import step

    monkeypatch.setattr(step, "_received", [])
    installed = []
    monkeypatch.setattr(step, "install_stop_handlers", lambda: installed.append(True) or True)
    monkeypatch.setattr(cli_commands, "pretrain", lambda args: None)
    monkeypatch.setattr(cli_commands, "report", lambda args: None)
    cli.main(["pretrain"])
    assert installed == [True]
    cli.main(["report", "nowhere", "--out", "nowhere"])
    assert installed == [True], "only training commands catch the stop signals"


def test_a_second_stop_signal_is_obeyed_at_once():
    """The first SIGTERM waits for the step boundary; a repeated one kills a job stuck elsewhere."""
    import signal
    import subprocess
    import sys

    code = (
        "import os, signal, time\n"
        "from lottery.train.step import install_stop_handlers, _received\n"
        "install_stop_handlers()\n"
        "os.kill(os.getpid(), signal.SIGTERM)\n"
        "assert _received == [signal.SIGTERM]\n"
        "print('noted', flush=True)\n"
        "os.kill(os.getpid(), signal.SIGTERM)\n"
        "time.sleep(5)\n"
        "print('still alive')\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    lines = proc.stdout.splitlines()  # (DeepSpeed may print its accelerator line first)
    assert "noted" in lines and "still alive" not in lines, proc.stdout[-2000:]
    assert proc.returncode == -signal.SIGTERM, proc.stderr[-2000:]
