"""Every public method of ``YoloTaskManager`` raises only the package's errors, and writes nothing where it
should not, whatever ids, paths and values it is given.

Hypothesis pushes 10,000 generated calls (split across the methods below) through a producer on a real Redis
server and SQLite registry, with no worker: every call ends in a result or a ``YoloTaskManagerError``. The ids
and paths hold NUL, ``..``, slashes, unicode, thousands of characters, absolute paths into another user's
folder, symbolic links out of one's own folder and in circles; the values are sets, bytes, huge integers,
NaN. The tree the test lives in is compared before and after each method's examples.
"""

from __future__ import annotations

import itertools
import shutil
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from yolo_task_manager import RunStatus, Settings, YoloTaskManager, YoloTaskManagerError
from yolo_task_manager.broker.embedded import EmbeddedRedis
from yolo_task_manager.storage import LocalFileSystemStorage

EXAMPLES = {
    "train": 2000, "stop": 500, "resume": 500, "get_run": 500, "list_runs": 500, "get_metrics": 400,
    "wait": 500, "infer_async": 1500, "infer": 700, "export": 800, "subscribe": 1000, "list_models": 400,
    "delete_model": 700,
}  # fmt: skip
assert sum(EXAMPLES.values()) == 10_000


def examples(method: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    return settings(
        max_examples=EXAMPLES[method],
        deadline=None,
        database=None,  # no .hypothesis folder in the working tree
        derandomize=True,  # CI sees the same 10,000 calls every time
        # The fixture is the method's: its Then (nothing written where it should not be) covers all its examples.
        suppress_health_check=[
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
            HealthCheck.filter_too_much,
            HealthCheck.function_scoped_fixture,
        ],  # fmt: skip
    )


class World:
    """A producer, and a storage root where ivy has a dataset, a run and a model, and kim (whom no generated
    call ever acts as) has files, a model and a run that must stay untouched."""

    def __init__(self, tmp: Path, server: EmbeddedRedis, fixtures: Path) -> None:
        self.tmp, self.root = tmp, tmp / "root"
        self.password = urlsplit(server.url).password or ""
        settings = Settings(storage_root=self.root, redis_url=server.url, key_prefix=f"pe{uuid.uuid4().hex[:8]}")
        storage = LocalFileSystemStorage(self.root)
        self.mgr = YoloTaskManager(storage, default_device="cpu", settings=settings)
        weights = tmp / "weights.pt"
        weights.write_bytes(b"not really weights")
        ivy, kim = self.root / "ivy", self.root / "kim"
        self.dataset = Path(shutil.copytree(fixtures / "datasets" / "coco8", ivy / "datasets" / "coco8"))
        (ivy / "own.jpg").write_bytes((fixtures / "images" / "bus.jpg").read_bytes())
        shutil.copytree(fixtures / "datasets" / "coco8", kim / "datasets" / "coco8")
        (kim / "secret.jpg").write_bytes((fixtures / "images" / "bus.jpg").read_bytes())
        for user, name in (("ivy", "keep-me"), ("kim", "kims-model")):
            storage.save_model(user, weights, name, ["a"], meta={"task": "detect", "imgsz": 64})
        (ivy / "to-kim").symlink_to(kim)
        (ivy / "loop-a").symlink_to(ivy / "loop-b")
        (ivy / "loop-b").symlink_to(ivy / "loop-a")
        # Queued for ever: no worker serves cuda:7.
        self.ivy_run = self.mgr.train("ivy", "yolov8n.yaml", str(self.dataset), 1, run_name="ivy-run", device="cuda:7")
        self.kim_run = self.mgr.train("kim", "yolov8n.yaml", str(kim / "datasets" / "coco8"), 1, run_name="kim-run",
                                      device="cuda:7")  # fmt: skip

    def snapshot(self) -> dict[str, tuple[int, int, int]]:
        """Everything under the test's folder but the state folder and Redis's: (mode, size, mtime) by path."""
        out = {}
        for path in sorted(self.tmp.rglob("*")):
            rel = path.relative_to(self.tmp)
            if rel.parts[:2] == ("root", ".ytm") or rel.parts[:1] == ("redis",) or path.is_symlink():
                continue
            st_ = path.stat()
            out[str(rel)] = (st_.st_mode, st_.st_size, st_.st_mtime_ns)
        return out


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, fixtures_dir: Path) -> Iterator[World]:
    tmp = tmp_path_factory.mktemp("public-errors")
    server = EmbeddedRedis(tmp / "redis").start()
    w = World(tmp, server, fixtures_dir)
    yield w
    w.mgr.close()
    server.stop()


@pytest.fixture
def untouched(world: World) -> Iterator[World]:
    """Then, for every method: nothing outside ivy's folder and the state folder changed; kim's run stands."""
    before = world.snapshot()
    yield world
    after = world.snapshot()
    changed = {k for k in before.keys() | after.keys() if before.get(k) != after.get(k)}
    assert {k for k in changed if not k.startswith("root/ivy/")} == set(), sorted(changed)[:20]
    assert world.mgr.get_run("kim", world.kim_run).status is RunStatus.QUEUED
    assert [m.name for m in world.mgr.list_models("kim")] == ["kims-model"]


def answer(call: Callable[[], Any]) -> tuple[Any, YoloTaskManagerError | None]:
    """(the call's result, None), or (None, the package error it raised); any other exception fails the test."""
    try:
        return call(), None
    except YoloTaskManagerError as exc:
        return None, exc


def said_clearly(error: YoloTaskManagerError | None, world: World) -> bool:
    """No error, or one with a message a person can read, that never shows the Redis password."""
    return error is None or (bool(str(error).strip()) and world.password not in str(error))


# -- what the calls are made of --------------------------------------------------------------------------

ROOT = "{root}"  # replaced by the world's storage root when drawn
ODD = st.one_of(
    st.none(), st.booleans(), st.integers(), st.integers(min_value=2**63, max_value=10**400).map(lambda n: -n),
    st.integers(min_value=2**63, max_value=10**400), st.floats(), st.text(max_size=20), st.binary(max_size=10),
    st.sets(st.integers(), max_size=2), st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
    st.lists(st.integers(), max_size=3), st.just(float("nan")), st.just(float("inf")), st.just(object()),
)  # fmt: skip
"""Values of every kind, for arguments that take a number, a string or None."""
PIECES = ["..", ".", "", "ivy", "kim", "models", "keep-me", "kims-model", "model.pt", "meta.json", "secret.jpg",
          "datasets", "coco8", "to-kim", "loop-a", "*", "?", "[a-z]*", "\0", "a\0b", "\u202e", "é", "日本",
          "x" * 300, ".ytm", "registry.db", "pretrained", "yolov8n.pt", "yolov8n.yaml", "data.yaml"]  # fmt: skip
IDS = st.one_of(
    st.sampled_from(["ivy", "mallory", "a", "A-b_c.1", "kim-run", "ivy-run", "keep-me", "0" * 32, "-x", "x" * 64]),
    st.text(max_size=80), st.text(min_size=60, max_size=5000), st.sampled_from(PIECES),
    st.lists(st.sampled_from(PIECES), min_size=1, max_size=4).map("/".join), ODD,
).filter(lambda v: v != "kim")  # fmt: skip
"""User ids, run ids and model names: valid ones, traversal, NUL, unicode, 5000 characters, non-strings."""
PATHS = st.one_of(
    st.lists(st.sampled_from(PIECES), min_size=1, max_size=6).map(lambda p: ROOT + "/" + "/".join(p)),
    st.lists(st.sampled_from(PIECES), min_size=1, max_size=6).map("/".join),
    st.text(max_size=100), st.text(min_size=4000, max_size=5000), st.sampled_from(
        ["/", "/dev/zero", "/proc/self/environ", "/etc/passwd", f"{ROOT}", f"{ROOT}/kim", f"{ROOT}/ivy/to-kim/datasets",
         f"{ROOT}/ivy/datasets/coco8", f"{ROOT}/ivy/loop-a", f"{ROOT}/*/secret*", f"{ROOT}/*/models/*/model.pt",
         f"{ROOT}/ivy/../kim/datasets/coco8", "~", "~root", "a\0.jpg"]),  # fmt: skip
    st.builds(Path, st.text(max_size=50)), ODD,
)  # fmt: skip
"""Paths: into the root of other users, through links, in circles, globs, relative, very long, not paths."""


def real(world: World, value: Any) -> Any:
    """A drawn value with the world's root and run ids put in."""
    if isinstance(value, str):
        return value.replace(ROOT, str(world.root)).replace("ivy-run", world.ivy_run).replace("kim-run", world.kim_run)
    if isinstance(value, list):
        return [real(world, v) for v in value]
    return value


IMAGES = st.one_of(
    PATHS, st.binary(max_size=64), st.lists(st.one_of(PATHS, st.binary(max_size=16)), max_size=4),
    st.sampled_from([np.zeros((4, 4, 3), np.uint8), np.zeros((4, 4), np.float64), np.zeros((0, 3), np.uint8),
                     np.array([1, None], dtype=object), np.zeros(3, bool), [np.zeros((2, 2, 3), np.uint8)] * 2]),
)  # fmt: skip
HYP_NAMES = st.sampled_from(["lr0", "imgsz", "batch", "optimizer", "classes", "lr", "data", "name", "cache"])
TIMEOUT_0 = st.one_of(
    st.just(0), st.just(0.0), ODD.filter(lambda v: v is not None and not (isinstance(v, (int, float)) and 0 < v < 1e9))
)
"""Timeouts that never make a test wait: zero, or invalid (None would wait for ever on a run that never ends)."""


# -- one test per method ---------------------------------------------------------------------------------
#
# Each example is a call that would succeed (or fail only for want of a worker), with one or two of its
# arguments drawn from the hostile strategies: so every check of every argument is reached, not only the first.

BASE_MODELS = st.one_of(
    PATHS, st.sampled_from(["yolov8n.pt", "yolov8n-cls.yaml", f"{ROOT}/kim/models/kims-model/model.pt"])
)
EPOCHS = st.one_of(st.integers(min_value=1, max_value=3), st.integers(min_value=2**31), ODD)
STATUSES = st.one_of(st.sampled_from(list(RunStatus)), st.sampled_from([s.value for s in RunStatus]), IDS)
RUN_IDS = st.one_of(st.sampled_from(["ivy-run", "kim-run"]), IDS)
MODEL_NAMES = st.one_of(st.sampled_from(["keep-me", "kims-model"]), IDS)
DEVICES = st.one_of(st.sampled_from(["cpu", "cuda", "cuda:7", "auto", "gpu.node.0", "0", "cuda:99999999999"]), ODD)
PREDICT_OPTS = st.dictionaries(st.sampled_from(["imgsz", "max_det", "classes", "half", "vid_stride", "stream"]), ODD,
                               max_size=2)  # fmt: skip
EXPORT_OPTS = st.dictionaries(st.sampled_from(["imgsz", "dynamic", "opset", "batch", "workspace", "int8"]), ODD,
                              max_size=2)  # fmt: skip


def draw_call(data: st.DataObject, world: World, valid: dict[str, Any], hostile: dict[str, Any]) -> dict[str, Any]:
    """``valid`` with one or two arguments replaced by hostile values (ROOT and run ids made real)."""
    chosen = data.draw(st.sets(st.sampled_from(sorted(hostile)), min_size=1, max_size=2), label="hostile")
    return {k: real(world, data.draw(hostile[k], label=k)) if k in chosen else v for k, v in valid.items()}


def run(
    world: World, method: str, data: st.DataObject, valid: dict[str, Any], hostile: dict[str, Any]
) -> tuple[dict[str, Any], Any, YoloTaskManagerError | None]:
    """Call ``method`` with drawn arguments: (the arguments, its result, the package error it raised)."""
    kwargs = draw_call(data, world, valid, hostile)
    extra = kwargs.pop("options", {})
    return kwargs, *answer(lambda: getattr(world.mgr, method)(**kwargs, **extra))


@examples("train")
@given(data=st.data())
def test_train(untouched: World, data: st.DataObject) -> None:
    w = untouched
    valid = {"user_id": "ivy", "base_model": "yolov8n.yaml", "dataset_dir": str(w.dataset), "epochs": 1,
             "run_name": None, "callbacks": None, "device": "cuda:7", "max_duration": None, "options": {}}  # fmt: skip
    hostile = {
        "user_id": IDS, "base_model": BASE_MODELS, "dataset_dir": PATHS, "epochs": EPOCHS, "run_name": IDS,
        "callbacks": st.one_of(ODD, st.just({"on_metrics": 1}), st.just({"nope": print}), st.just({1: print})),
        "device": DEVICES, "max_duration": st.one_of(st.sampled_from(["2h", "1e400s", "9" * 5000, "-1m"]), ODD),
        "options": st.dictionaries(HYP_NAMES, ODD, max_size=2),
    }  # fmt: skip
    kwargs, run_id, error = run(w, "train", data, valid, hostile)

    # Then: a clear error, or a run of the user who asked (never of someone else)
    assert said_clearly(error, w)
    assert error is not None or w.mgr.get_run(kwargs["user_id"], run_id).user_id == kwargs["user_id"]


@pytest.mark.parametrize("method", ["stop", "resume", "get_run", "get_metrics"])
def test_run_methods(untouched: World, method: str) -> None:
    @examples(method)
    @given(data=st.data())
    def calls(data: st.DataObject) -> None:
        kwargs, result, error = run(untouched, method, data, {"user_id": "ivy", "run_id": untouched.ivy_run},
                                    {"user_id": IDS, "run_id": RUN_IDS})  # fmt: skip
        assert said_clearly(error, untouched)
        if error is None and method == "get_run":  # only the asker's own run is ever shown
            assert (result.user_id, result.run_id) == ("ivy", untouched.ivy_run)
        if error is None and method == "stop":  # ivy's queued run stops; nothing else answers
            assert kwargs["user_id"] == "ivy" and kwargs["run_id"] == untouched.ivy_run

    calls()


@examples("list_runs")
@given(data=st.data())
def test_list_runs(untouched: World, data: st.DataObject) -> None:
    kwargs, runs, error = run(untouched, "list_runs", data, {"user_id": "ivy", "status": None},
                              {"user_id": IDS, "status": STATUSES})  # fmt: skip
    assert said_clearly(error, untouched)
    assert error is not None or all(r.user_id == kwargs["user_id"] for r in runs)


@examples("wait")
@given(data=st.data())
def test_wait(untouched: World, data: st.DataObject) -> None:
    valid = {"user_id": "ivy", "run_id": untouched.ivy_run, "timeout": 0, "poll": 0.01}
    kwargs, run_, error = run(untouched, "wait", data, valid,
                              {"user_id": IDS, "run_id": RUN_IDS, "timeout": TIMEOUT_0, "poll": TIMEOUT_0})  # fmt: skip
    assert said_clearly(error, untouched)
    assert error is not None or run_.user_id == kwargs["user_id"]


def infer_call(world: World) -> tuple[dict[str, Any], dict[str, Any]]:
    valid = {"user_id": "ivy", "model_name": "keep-me", "images": str(world.root / "ivy" / "own.jpg"), "conf": 0.25,
             "iou": 0.7, "device": None, "export": None, "save_annotated": False, "options": {}}  # fmt: skip
    hostile = {"user_id": IDS, "model_name": MODEL_NAMES, "images": IMAGES, "conf": ODD, "iou": ODD,
               "device": DEVICES, "export": st.one_of(st.just("onnx"), ODD), "save_annotated": ODD,
               "options": PREDICT_OPTS}  # fmt: skip
    return valid, hostile


@examples("infer_async")
@given(data=st.data())
def test_infer_async(untouched: World, data: st.DataObject) -> None:
    _, handle, error = run(untouched, "infer_async", data, *infer_call(untouched))

    # Then: with no worker running, every call ends in a clear error (NoLiveWorker at best), never a handle
    assert handle is None and error is not None and said_clearly(error, untouched)


@examples("infer")
@given(data=st.data())
def test_infer(untouched: World, data: st.DataObject) -> None:
    valid, hostile = infer_call(untouched)
    _, predictions, error = run(untouched, "infer", data, {**valid, "timeout": 0},
                                {**hostile, "timeout": st.one_of(st.none(), TIMEOUT_0)})  # fmt: skip
    assert predictions is None and error is not None and said_clearly(error, untouched)


@examples("export")
@given(data=st.data())
def test_export(untouched: World, data: st.DataObject) -> None:
    valid = {"user_id": "ivy", "model_name": "keep-me", "fmt": "onnx", "device": None, "timeout": 1.0, "options": {}}
    hostile = {"user_id": IDS, "model_name": MODEL_NAMES, "device": DEVICES, "timeout": TIMEOUT_0,
               "fmt": st.one_of(st.sampled_from(["torchscript", "engine", "openvino", "tflite", "onnx-"]), ODD),
               "options": EXPORT_OPTS}  # fmt: skip
    _, path, error = run(untouched, "export", data, valid, hostile)
    assert path is None and error is not None and said_clearly(error, untouched)


AFTER = st.one_of(
    st.sampled_from(
        [
            "",
            "abc",
            "-1",
            "1-x",
            "1",
            "0-0",
            "\u00b2",
            "9" * 5000,
            "18446744073709551616-0",
            "1718000000000-0",
            "\u0663",
            " 1",
            "1 ",
            "0x10",
        ]
    ),  # fmt: skip
    st.integers(min_value=-(10**30), max_value=10**30),
    ODD,
)


@examples("subscribe")
@given(data=st.data())
def test_subscribe(untouched: World, data: st.DataObject) -> None:
    w = untouched
    valid = {"user_id": "ivy", "run_id": w.ivy_run, "after": None, "until_done": True, "timeout": 0}
    hostile = {"user_id": IDS, "run_id": st.one_of(st.none(), RUN_IDS), "after": AFTER, "until_done": ODD,
               "timeout": TIMEOUT_0}  # fmt: skip
    kwargs = draw_call(data, w, valid, hostile)
    feed, error = answer(lambda: w.mgr.subscribe(**kwargs))
    assert said_clearly(error, w)
    if feed is not None and kwargs["user_id"] == "ivy" and kwargs["after"] in (None, ""):
        events, error = answer(lambda: list(itertools.islice(feed, 1)))  # ivy has history: returns at once
        assert said_clearly(error, w)
        assert error is not None or all(event.user_id == "ivy" for _, event in events)


@examples("list_models")
@given(user=IDS)
def test_list_models(untouched: World, user: Any) -> None:
    asked = real(untouched, user)
    models, error = answer(lambda: untouched.mgr.list_models(asked))
    assert said_clearly(error, untouched)
    assert error is not None or all(m.user_id == asked for m in models)


@examples("delete_model")
@given(data=st.data())
def test_delete_model(untouched: World, data: st.DataObject) -> None:
    names = MODEL_NAMES.filter(lambda v: v != "keep-me")
    _, deleted, error = run(untouched, "delete_model", data, {"user_id": "ivy", "model_name": "never-there"},
                            {"user_id": IDS, "model_name": names})  # fmt: skip

    # Then: nothing was there to delete for anyone asking (kim's model stays: see the fixture)
    assert said_clearly(error, untouched)
    assert error is not None or deleted is False
