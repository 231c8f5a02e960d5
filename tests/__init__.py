"""Evergreen's tests.

Each pytest-xdist worker gets its share of the cores for its native thread pools (OpenMP, OpenBLAS, polars), and
so do the pipelines it starts. It is set here, in the first module pytest imports from this package, because
those libraries read it once, when they load. With every pool sized to all cores, two workers on two cores ran
four busy threads that spin-waited on each other: the fast suite took 115 s against 107 s on a quiet machine,
and 203 s against 143 s on a loaded one. LightGBM is told its thread count in code, capped by OMP_NUM_THREADS
(`openmp_threads`): sized to both cores, a 2,000-row fit took 5.8 s beside the other worker against 1.8 s alone.
"""

import os

from evergreen.model.threads import available_cpus  # imports no numeric library: the settings still come first

if workers := int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0")):
    _share = str(max(1, available_cpus() // workers))
    for _pool in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "POLARS_MAX_THREADS"):
        os.environ.setdefault(_pool, _share)
