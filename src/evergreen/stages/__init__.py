"""One module per DVC stage of `dvc.yaml`, each a thin `run(ws)` over library code: read inputs from the
workspace, call pure functions, write outputs. Stages never import each other; `evergreen stage NAME` runs one."""
