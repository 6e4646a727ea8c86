"""A failure in what rank 0 alone reads, decides or writes in `lottery imp` stops every rank at once.

`LOTTERY_RAISE=<site>` makes rank 0 raise at one of imp.py's `dist.on_main` sites: the job must exit
non-zero quickly (no rank left waiting in a collective for a peer that has gone), and the injected
error must reach the output of both ranks, not only rank 0's.
"""

from __future__ import annotations

import pytest
from conftest import run, torchrun
from imp_runs import lighten, write_config

pytestmark = pytest.mark.distributed


@pytest.mark.parametrize("site", ["imp.state", "imp.prune"])
def test_a_rank_0_failure_at_an_imp_decision_stops_both_ranks(
    site, tmp_path, shapes_dir, mini_model_dir, deepspeed_ops, theta0_cache
):
    config = lighten(write_config(tmp_path / "imp.yaml", shapes_dir, mini_model_dir, zero=0, schedule=[0.3]))
    logs = tmp_path / "logs"
    env = [f"LOTTERY_THETA0_CACHE={theta0_cache}", f"LOTTERY_RAISE={site}"]
    ranks = [*torchrun(2), "--log-dir", str(logs), "--redirects", "3"]
    cmd = ["env", *env, *ranks, "-m", "lottery", "imp", "--config", str(config)]
    proc = run(cmd, timeout=120, check=False)  # a rank left waiting would run into the timeout
    assert proc.returncode != 0, proc.stdout[-2000:]
    errors = {path.parent.name: path.read_text() for path in logs.rglob("stderr.log")}
    assert sorted(errors) == ["0", "1"], sorted(logs.rglob("*"))
    message = f"injected fault at {site}"
    for rank, text in errors.items():
        assert message in text, f"rank {rank}'s stderr:\n{text[-3000:]}"
