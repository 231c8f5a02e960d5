"""Faults a user or a crash can cause in the model registry, on real ONNX graphs loaded by onnxruntime.

Damaged files (a truncated graph, random bytes in CHAMPION, a broken history or card) are each one
`RegistryError` line naming the file, and never become the champion. `kill -9` at every step of a promotion,
and at random moments of a promotion loop, leaves the champion on a complete version, and the next use of
the registry cleans up and registers no byte-identical twin.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper, save_model

from evergreen.inference import load_version
from evergreen.registry.store import CARD, FILES_SHA256, Registry, RegistryError

ROOT = Path(__file__).resolve().parents[2]
FEATURES = ["hr", "weather", "temp", "hum"]


def write_graph(folder: Path, n: int) -> dict[str, Path]:
    """A real ONNX graph (features [N, 4] -> MatMul by a 4 x 1000 weight of n's, about 16 kB) and its
    signature; the same `n` always gives the same bytes, another `n` other bytes."""
    folder.mkdir(parents=True, exist_ok=True)
    weight = numpy_helper.from_array(np.full((len(FEATURES), 1000), n, dtype=np.float32), name="w")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["features", "w"], ["out"])],
        "g",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, [None, len(FEATURES)])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [None, 1000])],
        [weight],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    save_model(model, folder / f"m{n}.onnx")
    signature = {"task": "regression", "input": {"columns": [{"name": f} for f in FEATURES]}, "output": {}}
    (folder / f"s{n}.json").write_text(json.dumps(signature))
    return {"model.onnx": folder / f"m{n}.onnx", "signature.json": folder / f"s{n}.json"}


def leftovers(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.name.startswith(".staging-") or p.name.endswith(".tmp")]


def assert_complete(registry: Registry, version: str) -> None:
    """Every file the card records is present with its recorded hash, and onnxruntime loads the graph."""
    folder = registry.path(version)
    card = json.loads((folder / CARD).read_text())
    assert set(card[FILES_SHA256]) == {"model.onnx", "signature.json"}
    for name in card[FILES_SHA256]:
        assert (folder / name).is_file()
    load_version(folder, version)


@pytest.fixture
def champion_v1(tmp_path: Path) -> Registry:
    registry = Registry(tmp_path / "reg")
    registry.promote(registry.add(write_graph(tmp_path / "src", 1), {}), reason="first", verify=load_version)
    return registry


def test_a_truncated_graph_is_never_made_champion(champion_v1, tmp_path):
    """`truncate -s 5000 vN/model.onnx; promote vN` (by hand, the gate or a rollback) is a RegistryError that
    names the file; CHAMPION keeps naming the old version, byte for byte."""
    registry = champion_v1
    v2 = registry.add(write_graph(tmp_path / "src", 2), {})
    model = registry.path(v2) / "model.onnx"
    os.truncate(model, 5000)
    pointer = (registry.root / "CHAMPION").read_bytes()
    for verify in (load_version, None):  # the recorded hash catches it even when a caller passes no verify
        with pytest.raises(RegistryError) as err:
            registry.promote(v2, reason="by hand", verify=verify)
        assert str(model) in str(err.value) and "\n" not in str(err.value)
    assert (registry.root / "CHAMPION").read_bytes() == pointer

    registry.promote(registry.add(write_graph(tmp_path / "src", 3), {}), reason="ok", verify=load_version)
    os.truncate(registry.path("v1") / "model.onnx", 5000)
    with pytest.raises(RegistryError, match=r"cannot roll back to v1: .*v1/model.onnx"):
        registry.rollback(verify=load_version)
    assert registry.champion() == "v3"


def test_a_graph_that_was_bad_from_the_start_fails_verification(champion_v1, tmp_path):
    """A version whose model.onnx was never a graph (its hash matches what was registered) is refused by the
    caller's verify (onnxruntime cannot load it); the error names the file."""
    registry = champion_v1
    files = write_graph(tmp_path / "src", 2)
    files["model.onnx"].write_bytes(b"not a graph" * 100)
    v2 = registry.add(files, {})
    with pytest.raises(RegistryError, match=rf"cannot make v2 the champion: .*{v2}/model.onnx"):
        registry.promote(v2, reason="by hand", verify=load_version)
    assert registry.champion() == "v1"


@pytest.mark.parametrize(
    "content",
    [os.urandom(64) + b"\xff\xfe", b"", b"v1 v2\n", b"../etc\n"],
    ids=["random-bytes", "empty", "two-names", "path"],
)
def test_a_damaged_champion_pointer_is_one_line_naming_the_file(champion_v1, content):
    """A CHAMPION file that does not hold one version name is a RegistryError naming the file (no traceback),
    and promoting a version by hand repairs it."""
    registry = champion_v1
    (registry.root / "CHAMPION").write_bytes(content)
    with pytest.raises(RegistryError) as err:
        registry.champion()
    assert str(registry.root / "CHAMPION") in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(RegistryError, match="CHAMPION is damaged"):
        registry.rollback()
    assert registry.promote("v1", reason="repair", verify=load_version) is True
    assert registry.champion() == "v1"


@pytest.mark.parametrize(
    ("content", "line"),
    [(b"\x00\xff garbage\n", 2), (b"[1, 2]\n", 2), (b'{"event": "promote"}\n', 2), (b"{}\n" * 3, 2)],
    ids=["binary", "not-an-object", "no-version", "empty-objects"],
)
def test_a_damaged_history_is_one_line_naming_the_file_and_line(champion_v1, content, line):
    """A history.jsonl line that is not a promote/rollback event is a RegistryError naming the file and the
    line, for reading the history and for a rollback (which needs it)."""
    registry = champion_v1
    with (registry.root / "history.jsonl").open("ab") as handle:
        handle.write(content)
    for call in (registry.history, registry.rollback):
        with pytest.raises(RegistryError) as err:
            call()
        message = str(err.value)
        assert f"{registry.root / 'history.jsonl'}: line {line}" in message and "\n" not in message
    assert registry.champion() == "v1"


def test_a_damaged_model_card_is_one_line_naming_the_file(champion_v1, tmp_path):
    """A model card that is not a JSON object is a RegistryError naming it, for reading it and for promoting
    the version (whose recorded hashes live in the card)."""
    registry = champion_v1
    v2 = registry.add(write_graph(tmp_path / "src", 2), {})
    card = registry.path(v2) / CARD
    card.write_bytes(b"\x89PNG\r\n")
    for call in (lambda: registry.card(v2), lambda: registry.promote(v2, reason="x", verify=load_version)):
        with pytest.raises(RegistryError, match=f"{card}: the model card is not valid JSON"):
            call()
    assert registry.champion() == "v1"


# ------------------------------------------------------------------------------------------- kill -9
# The worker registers and promotes one real graph. With KILL_AT = k it sends itself SIGKILL just before the
# k-th file-system call that changes something (open, write, fsync, mkdir, rename, replace, unlink, ...),
# so every step of `add` and `promote` is interrupted once. Verification (onnxruntime) is not counted.
WORKER = r"""
import io, json, os, signal, sys
from pathlib import Path
import onnxruntime
from evergreen.registry.store import Registry

root, model, signature, kill_at, loop = Path(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5]
CHANGING = {"open", "write", "fsync", "close", "mkdir", "rename", "replace", "unlink", "rmdir", "truncate",
            "sendfile", "copy_file_range", "utime", "chmod", "mkstemp", "ftruncate"}
steps = 0

def profile(frame, event, arg):
    global steps
    if event != "c_call" or getattr(arg, "__name__", None) not in CHANGING:
        return
    owner = getattr(arg, "__self__", None)
    if getattr(arg, "__module__", None) in ("posix", "io", "_io") or isinstance(owner, io.IOBase):
        steps += 1
        if steps == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)

def load(folder, version):  # onnxruntime itself: evergreen.inference would triple the start-up time
    onnxruntime.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])

def verify(folder, version):
    sys.setprofile(None)
    try:
        load(folder, version)
    finally:
        sys.setprofile(profile)

registry = Registry(root)
if loop == "loop":  # promote fresh graphs until killed, numbered from `kill_at` on
    sys.path.insert(0, os.getcwd())
    from tests.faults.test_registry_faults import write_graph

    print("ready", flush=True)
    for n in range(kill_at, kill_at + 100_000):
        version = registry.add(write_graph(Path(model).parent, n), {"n": n})
        registry.promote(version, reason=f"loop {n}", verify=load)
sys.setprofile(profile)
version = registry.add({"model.onnx": model, "signature.json": signature}, {"by": "worker"})
registry.promote(version, reason="worker", verify=verify)
sys.setprofile(None)
print(json.dumps({"version": version, "steps": steps}))
"""


def _run_worker(script: Path, root: Path, files: dict[str, Path], kill_at: int) -> subprocess.CompletedProcess:
    argv = [sys.executable, str(script), str(root), str(files["model.onnx"]), str(files["signature.json"])]
    return subprocess.run([*argv, str(kill_at), "once"], capture_output=True, text=True, timeout=120, cwd=ROOT)


@pytest.mark.slow
def test_kill_9_at_every_step_of_a_promotion_leaves_a_complete_champion(champion_v1, tmp_path):
    """For every k, a promotion killed (SIGKILL) before its k-th changing file-system call leaves CHAMPION
    naming a complete, loadable version (the old or the new one), every registered version complete, and the
    next registry use removes the leftovers, registers no byte-identical twin and can roll back to v1."""
    base = champion_v1.root
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    files = write_graph(tmp_path / "src", 2)
    shutil.copytree(base, tmp_path / "probe")
    clean_run = _run_worker(script, tmp_path / "probe", files, 0)
    assert clean_run.returncode == 0, clean_run.stderr
    total = json.loads(clean_run.stdout)["steps"]
    assert total >= 10  # the probe really counted the copy, fsyncs, renames and the pointer switch

    def killed_at(k: int) -> tuple[int, Path, int]:
        root = tmp_path / f"k{k}"
        shutil.copytree(base, root)
        return k, root, _run_worker(script, root, files, k).returncode

    with ThreadPoolExecutor(max_workers=8) as pool:
        outcomes = list(pool.map(killed_at, range(1, total + 1)))
    assert all(rc == -signal.SIGKILL for _, _, rc in outcomes), [(k, rc) for k, _, rc in outcomes]

    new_model = files["model.onnx"].read_bytes()
    states = set()
    for k, root, _ in outcomes:
        registry = Registry(root)
        champion = registry.champion()
        assert champion in ("v1", "v2"), k
        for version in registry.versions():
            assert_complete(registry, version)
        states.add((champion, tuple(registry.versions()), bool(leftovers(root))))
        # the next run of the same promotion
        version = registry.add(files, {"by": "rerun"})
        registry.promote(version, reason="rerun", verify=load_version)
        assert leftovers(root) == [], k
        assert registry.versions() == ["v1", "v2"], k
        assert (registry.path(registry.champion()) / "model.onnx").read_bytes() == new_model
        assert registry.rollback(verify=load_version) == "v1", k
    # the kills landed in different phases: before the version existed, between add and promote, after
    assert {("v1", ("v1",)), ("v1", ("v1", "v2")), ("v2", ("v1", "v2"))} <= {s[:2] for s in states}
    assert any(s[2] for s in states)  # and some left staging folders or temporary files behind


@pytest.mark.slow
def test_kill_9_at_random_moments_of_a_promotion_loop(champion_v1, tmp_path):
    """A process promoting fresh graphs in a loop, killed with SIGKILL at random moments, always leaves the
    champion on a complete version, and the next registry use cleans up and adds no byte-identical twin."""
    registry = champion_v1
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    signature = write_graph(tmp_path / "pool", 0)["signature.json"]
    rng = random.Random(7)
    for round_ in range(1, 7):
        worker = subprocess.Popen(
            [sys.executable, str(script), str(registry.root), str(tmp_path / "pool" / "m0.onnx"),
             str(signature), str(round_ * 10_000), "loop"],
            stdout=subprocess.PIPE, text=True, cwd=ROOT,
        )  # fmt: skip
        assert worker.stdout is not None and worker.stdout.readline() == "ready\n"
        time.sleep(rng.uniform(0.05, 0.4))
        worker.send_signal(signal.SIGKILL)
        assert worker.wait(timeout=30) == -signal.SIGKILL
        champion = registry.champion()
        assert champion is not None
        assert_complete(registry, champion)
        before = registry.versions()
        newest = registry.card(before[-1]).get("n")
        if newest is not None:  # a rerun of the interrupted promotion adds the same graph: no twin
            assert registry.add(write_graph(tmp_path / "again", newest), {}) == before[-1]
        registry.promote(before[-1], reason="after kill", verify=load_version)
        assert leftovers(registry.root) == []
        assert registry.versions() == before
    assert len(registry.versions()) > 6  # the loop really promoted between kills
    models = [(registry.path(v) / "model.onnx").read_bytes() for v in registry.versions()]
    assert len(set(models)) == len(models)


def test_the_cli_refuses_to_promote_a_truncated_graph(champion_v1, tmp_path):
    """Promise: `evergreen models promote` (by hand) never makes a graph that cannot load the champion.

    Attack: `truncate -s 5000 vN/model.onnx; evergreen models promote vN`, then the same for rollback's target.
    """
    import copy

    import yaml

    from tests.harness import TINY

    v2 = champion_v1.add(write_graph(tmp_path / "src", 2), {})
    os.truncate(champion_v1.path(v2) / "model.onnx", 5000)
    params = copy.deepcopy(TINY) | {"promote": {"registry_dir": str(champion_v1.root)}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    evergreen = str(Path(sys.executable).parent / "evergreen")
    done = subprocess.run(
        [evergreen, "models", "promote", v2, "-p", str(tmp_path / "params.yaml")], capture_output=True, text=True
    )
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "model.onnx" in lines[0], done.stderr
    assert champion_v1.champion() == "v1"
