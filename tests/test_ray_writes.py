"""Writing a Ray Dataset that an actor pool produces, on real local Ray: the pattern of `encore score`."""
from __future__ import annotations

import threading

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from encore.ray_runtime import write_parquet

pytestmark = pytest.mark.ray


def test_a_pool_holding_every_cpu_still_gets_its_output_written(tmp_path):
    # At a million listeners score stopped for good: its two actors held both CPUs, their output had
    # filled Ray Data's object-store budget, and the write task waited for a CPU. Here the pool takes
    # every CPU of the Ray it runs on and the budget is 2 MiB, so a write that reserves a CPU never runs.
    import ray
    import ray.data

    class WideRows:   # defined here: Ray pickles it by value, the test module is not importable there
        """Each input row becomes 2,000 output rows: output outgrows the budget, as 1M listeners' lists do."""

        def __call__(self, batch: dict) -> dict:
            rows = np.repeat(np.asarray(batch["row"]), 2000)
            return {"row": rows, "reason": np.full(len(rows), "because you play someone", dtype=object)}

    started_here = not ray.is_initialized()
    if started_here:
        ray.init(address="local", num_cpus=2, include_dashboard=False)
    context = ray.data.DataContext.get_current()
    limits = context.execution_options.resource_limits
    try:
        context.execution_options.resource_limits = limits.copy(object_store_memory=2 * 2**20)
        cpus = int(ray.cluster_resources()["CPU"])
        rows = ray.data.from_pandas(pd.DataFrame({"row": np.arange(120)}), override_num_blocks=30)
        lists = rows.map_batches(WideRows, batch_size=4, num_cpus=1, batch_format="numpy",
                                 compute=ray.data.ActorPoolStrategy(size=cpus))
        # In a thread, so that a write that never runs fails this test instead of hanging the suite.
        writer = threading.Thread(target=write_parquet, args=(lists, str(tmp_path / "staged")), daemon=True)
        writer.start()
        writer.join(timeout=180)
        assert not writer.is_alive(), "the write did not finish in 3 minutes: its tasks are waiting for a CPU"
    finally:
        context.execution_options.resource_limits = limits
        if started_here:
            ray.shutdown()
    written = pq.read_table(tmp_path / "staged")
    assert written.num_rows == 120 * 2000
    assert sorted(set(written["row"].to_pylist())) == list(range(120))
