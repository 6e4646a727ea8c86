"""Defect 4: a run's config.yaml, rewritten while another process reads it, is always one whole config.

Rank 0 alone writes it (`dist.on_main`, site ``pretrain.config_yaml``), through `write_record`: a
reader (a peer rank before the fix, or a tool such as `universal.sh --missing`) never sees a part."""

from __future__ import annotations

import threading

from lottery.config import PretrainConfig, load_config
from lottery.run_record import RECORD, write_record


def test_a_reader_never_sees_a_half_written_record(tmp_path):
    configs = [
        load_config(None, [f"train.steps={n}", "data.curriculum=[]"], cls=PretrainConfig) for n in (7, 9)
    ]
    write_record(tmp_path, configs[0])
    done, seen, torn = threading.Event(), set(), []

    def read() -> None:
        while not done.is_set():
            try:
                seen.add(load_config(str(tmp_path / RECORD), [], cls=PretrainConfig).train.steps)
            except Exception as err:  # noqa: BLE001 - any failure to read is what the test looks for
                torn.append(repr(err))

    reader = threading.Thread(target=read)
    reader.start()
    for index in range(100):
        write_record(tmp_path, configs[index % 2])
    done.set()
    reader.join()
    assert not torn, torn[:3]
    assert seen <= {7, 9} and seen
