"""The prediction service under load, shared by `bench_service.py` and `bench_shadow.py`: a registry and params
around the exported model (`prepare`), the real service and the bare ceiling on a port (`server`, `bare`),
single-record request bodies from the bike data (`records`, `lua_script`), and one `wrk` run (`load`).

Importing it puts the repository on `sys.path`, for `tests.harness`.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import polars as pl
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from tests.harness import wait_until  # noqa: E402

BIN = Path(sys.executable).parent
TOKEN = "bench-token"
FEATURES_FROM = ROOT / "data" / "source" / "bike-sharing" / "hour.csv"


def prepare(work: Path, models: Path, log_url: str | None = None) -> Path:
    """A registry holding the exported model as champion, and params pointing at it (and at the log: a SQLite
    file in `work`, or `log_url`); returns the params file."""
    sys.path.insert(0, str(ROOT / "src"))
    from evergreen.registry.store import Registry

    missing = [n for n in ("model.onnx", "signature.json", "model_card.json") if not (models / n).exists()]
    if missing:
        raise SystemExit(f"models/ lacks {', '.join(missing)}: run `dvc repro export` first")
    registry = Registry(work / "registry")
    if registry.champion() is None:
        files = {n: models / n for n in ("model.onnx", "signature.json")}
        version = registry.add(files, json.loads((models / "model_card.json").read_text()))
        registry.promote(version, "benchmark")
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params.setdefault("promote", {})["registry_dir"] = str(work / "registry")
    params.setdefault("serve", {})["log_path"] = str(work / "predictions.db")
    params["serve"]["log_url"] = log_url
    path = work / f"params-{'postgresql' if log_url else 'sqlite'}.yaml"
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return path


@contextlib.contextmanager
def _running(command: list[str], cwd: Path, env: dict[str, str], url: str, ready: str) -> Iterator[str]:
    """`command` running until the block ends, once `url` + `ready` answers (a benchmark of a server that never
    came up would measure connection errors)."""
    process = subprocess.Popen(command, cwd=cwd, env=env)

    def up() -> bool:
        if process.poll() is not None:
            raise SystemExit(f"{command[0]} exited with {process.returncode}")
        try:
            return httpx.get(f"{url}{ready}", timeout=1).status_code in (200, 405)
        except httpx.HTTPError:
            return False

    try:
        wait_until(up, 60, f"{command[0]} to answer on {url}{ready}", interval=0.1)
        yield url
    finally:
        process.terminate()
        process.wait(30)


def server(params: Path, port: int, workers: int) -> contextlib.AbstractContextManager[str]:
    """`evergreen serve` with `workers` processes."""
    command = [str(BIN / "evergreen"), "serve", "--params", str(params), "--port", str(port)]
    env = {**os.environ, "EVERGREEN_API_TOKEN": TOKEN}
    return _running([*command, "--workers", str(workers)], params.parent, env, f"http://127.0.0.1:{port}", "/health")


def bare(model: Path, port: int, workers: int) -> contextlib.AbstractContextManager[str]:
    """The bare ceiling (`bench/bare_service.py`) with `workers` processes."""
    command = [str(BIN / "uvicorn"), "bare_service:app", "--factory", "--port", str(port), "--log-level", "warning"]
    command += ["--no-access-log", "--workers", str(workers)]
    env = {**os.environ, "BARE_MODEL": str(model)}
    return _running(command, ROOT / "bench", env, f"http://127.0.0.1:{port}", "/predict")


def records(n: int) -> list[dict[str, Any]]:
    """`n` rows of the bike data as request records (rows with dirt the service would refuse are skipped)."""
    ints = ["instant", "season", "yr", "mnth", "hr", "holiday", "weekday", "workingday", "weathersit"]
    floats = ["temp", "atemp", "hum", "windspeed"]
    frame = pl.read_csv(FEATURES_FROM, infer_schema=False).select("dteday", *ints, *floats)
    frame = frame.with_columns(pl.all().str.strip_chars())
    typed = frame.with_columns(
        *(pl.col(c).cast(pl.Int64, strict=False) for c in ints),
        *(pl.col(c).cast(pl.Float64, strict=False) for c in floats),
    )
    return typed.drop_nulls().head(n).to_dicts()


def lua_script(path: Path, records: list[dict[str, Any]]) -> Path:
    """A wrk script cycling single-record `POST /predict` bodies, with the token (the bare app ignores it)."""
    bodies = ",\n".join(json.dumps(json.dumps({"records": [r]})) for r in records)
    path.write_text(
        f"local bodies = {{{bodies}}}\nlocal i = 0\n"
        'wrk.method = "POST"\n'
        'wrk.headers["Content-Type"] = "application/json"\n'
        f'wrk.headers["Authorization"] = "Bearer {TOKEN}"\n'
        "request = function()\n  i = i % #bodies + 1\n"
        "  return wrk.format(nil, nil, nil, bodies[i])\nend\n"
    )
    return path


def _ms(text: str) -> float:
    """A wrk latency ("812.00us", "3.21ms", "1.02s") in milliseconds."""
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", text).groups()
    return float(number) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def load(url: str, script: Path, connections: int, seconds: float) -> dict[str, Any]:
    """wrk, one thread, `connections` keep-alive connections in a closed loop, for `seconds`."""
    command = ["wrk", "-t1", f"-c{connections}", f"-d{seconds:g}s", "--latency", "-s", str(script), f"{url}/predict"]
    before = os.getloadavg()[0]
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    percentiles = dict(re.findall(r"^\s+(50|99)%\s+(\S+)$", out, re.MULTILINE))
    done = int(re.search(r"(\d+) requests in", out).group(1))
    refused = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: (.*)$", out, re.MULTILINE)
    return {
        "connections": connections,
        "requests": done,
        "non_2xx": int(refused.group(1)) if refused else 0,
        "socket_errors": errors.group(1) if errors else None,
        "requests_per_s": round(float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)), 1),
        "p50_ms": round(_ms(percentiles["50"]), 2),
        "p99_ms": round(_ms(percentiles["99"]), 2),
        "load_average": [round(before, 2), round(os.getloadavg()[0], 2)],
    }
