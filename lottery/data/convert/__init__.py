"""Converters from the data formats other projects publish into this project's shard format.

Users who already extracted bottom-up-attention features should not have to re-extract them:
`lxmert_tsv` reads LXMERT's TSV and caption JSONs, `uniter_lmdb` reads UNITER's image and text LMDBs.
`vilt_arrow` reads ViLT's Arrow tables, whose images become image-only samples (for patch models).
All hand their samples to `writer.write_shards`, which owns the resumable, all-or-nothing output.
Nothing here imports lmdb, msgpack, lz4 or pyarrow at module level, so `lottery --help` stays light.
"""

from __future__ import annotations

FORMATS: tuple[str, ...] = ("lxmert", "uniter", "vilt")
