"""``python -m lottery``: the entry point every launcher runs (deepspeed --module, torchrun -m, srun)."""

from lottery.cli import main

main()
