"""Bounded inference inputs: each bad input costs one error entry, never the batch, the worker's memory or a
hung thread, and a glob or folder never names another user's file.

The worker's own ``predict`` runs here on a fake model (it records what it is asked to predict on), with the
real decoding: Pillow for headers, OpenCV for pixels. One test goes through a real worker.
"""

from __future__ import annotations

import base64
import io
import os
import resource
import shutil
import struct
import threading
import zlib
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from tests.integration.conftest import Stack, base_checkpoint, new_stack  # noqa: F401 - base_checkpoint is a fixture
from yolo_task_manager import InvalidInput, Settings, YoloTaskManager
from yolo_task_manager.api_client.inference import EXPORT_OPTIONS, PREDICT_OPTIONS, check_options, encode_sources
from yolo_task_manager.broker.embedded import EmbeddedRedis
from yolo_task_manager.ids import check_access
from yolo_task_manager.storage import LocalFileSystemStorage
from yolo_task_manager.workers.inference import predict


class FakeResult:
    """What ``predict`` reads of an ultralytics result, for an image with nothing detected."""

    def __init__(self, array: np.ndarray) -> None:
        self.orig_shape = array.shape[:2]
        self.names = {0: "thing"}
        self.obb = self.boxes = self.probs = self.masks = self.keypoints = None


class FakeModel:
    def __init__(self) -> None:
        self.seen: list[tuple[int, ...]] = []

    def predict(self, arrays: list[np.ndarray], **_: Any) -> list[FakeResult]:
        self.seen += [a.shape for a in arrays]
        return [FakeResult(a) for a in arrays]


def png_bomb(width: int, height: int) -> bytes:
    """A valid 1-bit PNG of zeros: a few kB on disk, ``width * height`` pixels once decoded."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    row = b"\0" * (1 + (width + 7) // 8)
    packer = zlib.compressobj(9)
    idat = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def jpeg(width: int = 64, height: int = 48) -> bytes:
    return cv2.imencode(".jpg", np.full((height, width, 3), 127, np.uint8))[1].tobytes()


def run_predict(
    images: Any, root: Path, user: str = "ivy", shared: tuple[Path, ...] = (), **kwargs: Any
) -> tuple[list[dict[str, Any]], FakeModel]:
    """What a worker answers for ``images`` sent by ``user``, as the producer encodes them (``shared``: the
    operator's folders any user may read)."""
    model = FakeModel()
    answer = predict(model, "detect", encode_sources(images), {}, None,
                     lambda p: check_access(p, root, user, also=shared), **kwargs)  # fmt: skip
    return answer, model


# -- decompression bombs ---------------------------------------------------------------------------------


def test_a_decompression_bomb_is_refused_unread_and_the_rest_of_the_batch_is_predicted(tmp_path: Path) -> None:
    # Given a 20000x20000 PNG of a few kB, as a file and as bytes, between ordinary images
    bomb = png_bomb(20000, 20000)
    assert len(bomb) < 100_000
    (tmp_path / "bomb.png").write_bytes(bomb)
    (tmp_path / "ok.jpg").write_bytes(jpeg(64, 48))
    images = [str(tmp_path / "ok.jpg"), str(tmp_path / "bomb.png"), bomb, np.zeros((32, 40, 3), np.uint8)]
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

    # When a worker predicts on the batch
    answer, model = run_predict(images, tmp_path / "root", shared=(tmp_path,))

    # Then each bomb is one error entry naming its size and the limit, the others have predictions, and the
    # 400-million-pixel canvas was never allocated (it needs 1.2 GB)
    assert [p["source"] for p in answer] == [str(tmp_path / "ok.jpg"), str(tmp_path / "bomb.png"), "image_2.jpg",
                                             "image_3.jpg"]  # fmt: skip
    too_large = "image too large (20000\u00d720000 pixels, limit 100000000)"
    assert [p["error"] for p in answer] == [None, too_large, too_large, None]
    assert (answer[0]["width"], answer[0]["height"], answer[3]["width"]) == (64, 48, 40)
    assert model.seen == [(48, 64, 3), (32, 40, 3)]
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before < 300_000  # kB


def test_the_pixel_limit_is_the_workers_setting_for_images_arrays_and_videos(tmp_path: Path) -> None:
    # Given a 64x48 image, array and 3-frame video, and a worker limit of 1000 pixels
    (tmp_path / "small.jpg").write_bytes(jpeg(64, 48))
    video = tmp_path / "clip.mp4"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 5, (64, 48))
    for _ in range(3):
        writer.write(np.zeros((48, 64, 3), np.uint8))
    writer.release()

    # When it predicts on them
    answer, model = run_predict([str(tmp_path / "small.jpg"), np.zeros((48, 64, 3), np.uint8), str(video)],
                                tmp_path / "root", shared=(tmp_path,), max_pixels=1000)  # fmt: skip

    # Then each is refused with its size, before any reached the model
    assert [p["error"] for p in answer] == ["image too large (64\u00d748 pixels, limit 1000)"] * 3
    assert model.seen == []


# -- files that are not files ----------------------------------------------------------------------------


def test_a_fifo_and_a_device_are_skipped_unopened_and_never_hang_the_worker(tmp_path: Path) -> None:
    # Given a FIFO named like an image (no writer will ever open it), alone and in a folder, and /dev/zero
    folder = tmp_path / "shots"
    folder.mkdir()
    os.mkfifo(tmp_path / "pipe.jpg")
    os.mkfifo(folder / "a-pipe.jpg")
    (folder / "b.jpg").write_bytes(jpeg())
    answers: list[list[dict[str, Any]]] = []

    # When a worker predicts on them (in a thread, so that a hang fails the test instead of stalling it)
    thread = threading.Thread(
        target=lambda: answers.append(
            run_predict(
                [str(tmp_path / "pipe.jpg"), "/dev/zero", str(folder)],
                tmp_path / "root",
                shared=(tmp_path, Path("/dev")),
            )[0]
        ),  # fmt: skip
        daemon=True,
    )
    thread.start()
    thread.join(30)

    # Then it finished at once: one error entry for each non-file, and the folder's real image predicted
    assert not thread.is_alive(), "predict blocked on a FIFO"
    (answer,) = answers
    skipped = "not a regular file (a pipe, a device or a socket): skipped, never opened"
    assert [(p["source"], p["error"]) for p in answer] == [
        (str(tmp_path / "pipe.jpg"), skipped), ("/dev/zero", skipped), (str(folder / "a-pipe.jpg"), skipped),
        (str(folder / "b.jpg"), None),
    ]  # fmt: skip


# -- arrays and other in-memory inputs -------------------------------------------------------------------


def test_each_bad_array_gets_one_error_entry_and_the_good_ones_are_predicted(tmp_path: Path) -> None:
    # Given arrays of the wrong dtype, the wrong number of dimensions, no pixels, or objects, among good ones
    arrays = [
        np.zeros((8, 8, 3), np.float32),
        np.zeros(10, np.uint8),
        np.zeros((2, 8, 8, 3), np.uint8),
        np.zeros((0, 8, 3), np.uint8),
        np.array([object(), 1], dtype=object),
        np.zeros((8, 8, 3), bool),
        np.zeros((8, 8, 7), np.uint8),
        np.zeros((16, 8, 3), np.uint8),
        np.zeros((16, 8), np.uint16),
    ]

    # When a worker predicts on them
    answer, model = run_predict(arrays, tmp_path / "root")

    # Then the seven bad ones each have an error saying what to pass, and the two good ones are predicted
    errors = [p["error"] for p in answer]
    assert [e is None for e in errors] == [False] * 7 + [True] * 2
    assert "a float32 array is not an image: pass uint8 BGR pixels" in errors[0]
    assert all("is not one image" in e for e in (errors[1], errors[2], errors[6]))
    assert "has no pixels" in errors[3] and "a object array" in errors[4] and "a bool array" in errors[5]
    assert model.seen == [(16, 8, 3), (16, 8)]


def test_a_crafted_message_with_a_pickled_array_or_bad_base64_fails_only_its_own_entry(tmp_path: Path) -> None:
    # Given a message as a hostile producer could write it: an object array in .npy form (loading it would
    # need pickle), base64 that is not, empty bytes, and one good image
    buffer = io.BytesIO()
    np.save(buffer, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    sources = [
        {"npy": base64.b64encode(buffer.getvalue()).decode(), "name": "evil.npy"},
        {"data": "%%% not base64 %%%", "name": "junk.jpg"},
        {"data": "", "name": "empty.jpg"},
        {"data": base64.b64encode(jpeg()).decode(), "name": "good.jpg"},
    ]

    # When the worker predicts on it
    answer = predict(FakeModel(), "detect", sources, {}, None, lambda p: p)

    # Then the three bad entries have errors, and the good image its prediction
    assert [p["source"] for p in answer] == ["evil.npy", "junk.jpg", "empty.jpg", "good.jpg"]
    assert "not a readable array" in answer[0]["error"] and "pickle" in answer[0]["error"]
    assert answer[1]["error"] == "the image data is not valid base64" and answer[2]["error"] == "empty: not an image"
    assert answer[3]["error"] is None and answer[3]["width"] == 64


class BytesPath(os.PathLike):  # type: ignore[type-arg]
    """A path object whose file system path is bytes."""

    def __init__(self, raw: bytes) -> None:
        self.raw = raw

    def __fspath__(self) -> bytes:
        return self.raw


@pytest.mark.parametrize(
    "item",
    [
        object(),
        {1},
        {"path": "x.jpg"},
        3.5,
        np.float64(1.0),
        Path("a\0b.jpg"),
        "a\0.jpg",
        "x" * 5000,
        BytesPath(b"/tmp/x.jpg"),
    ],  # fmt: skip
)
def test_inputs_that_can_never_be_images_are_refused_by_the_producer(item: Any) -> None:
    # Given something that is no path, bytes or array, or a path no file can have
    # When it is encoded for a worker
    # Then InvalidInput says which input and what to pass, and nothing is sent
    with pytest.raises(InvalidInput, match=r"images\[1\]"):
        encode_sources([b"fine", item])


@pytest.mark.parametrize(
    ("options", "table"),
    [
        ({"imgsz": 10**9}, PREDICT_OPTIONS), ({"imgsz": [640, 10**400]}, PREDICT_OPTIONS),
        ({"imgsz": [1, 2, 3]}, PREDICT_OPTIONS), ({"max_det": 0}, PREDICT_OPTIONS),
        ({"classes": ["person"]}, PREDICT_OPTIONS), ({"classes": list(range(10_001))}, PREDICT_OPTIONS),
        ({"vid_stride": -1}, PREDICT_OPTIONS), ({"workspace": float("nan")}, EXPORT_OPTIONS),
        ({"batch": 10**6}, EXPORT_OPTIONS),
    ],
)  # fmt: skip
def test_numeric_options_out_of_bounds_are_refused(options: dict[str, Any], table: dict[str, Any]) -> None:
    # Given an option a worker could not honour without exhausting its memory
    # When it is checked
    # Then InvalidInput names it
    with pytest.raises(InvalidInput, match=next(iter(options))):
        check_options(options, table, "inference")


def test_ordinary_options_pass() -> None:
    assert check_options({"imgsz": [480, 640], "max_det": 100, "classes": [0, 2]}, PREDICT_OPTIONS, "inference")
    assert check_options({"imgsz": 320, "opset": 12, "workspace": 4.0}, EXPORT_OPTIONS, "export")


# -- other users' files ----------------------------------------------------------------------------------


@pytest.fixture
def tenants(tmp_path: Path) -> Path:
    """A storage root where kim has a secret picture and a model, and ivy a picture and a link to kim's."""
    root = tmp_path / "root"
    for path in (root / "kim" / "secret-plan.jpg", root / "kim" / "models" / "m" / "model.pt",
                 root / "ivy" / "own.jpg"):  # fmt: skip
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(jpeg())
    (root / "ivy" / "linked.jpg").symlink_to(root / "kim" / "secret-plan.jpg")
    return root


def test_a_glob_over_other_users_files_reads_as_one_that_matches_nothing(tenants: Path) -> None:
    # Given globs that match only kim's files, one that matches nothing at all, and one matching both users
    patterns = [f"{tenants}/*/secret*", f"{tenants}/*/models/*/model.pt", f"{tenants}/*/nothing*", f"{tenants}/*/*.jpg"]

    # When ivy predicts on them
    answer, _ = run_predict(patterns, tenants, "ivy")

    # Then kim's names never come back: her files read as "no file matches", exactly like no file at all, and
    # of the mixed glob only ivy's own picture is predicted (not the link into kim's folder)
    assert [(p["source"], p["error"]) for p in answer] == [
        (patterns[0], "no file matches"), (patterns[1], "no file matches"), (patterns[2], "no file matches"),
        (str(tenants / "ivy" / "own.jpg"), None),
    ]  # fmt: skip
    assert "kim" not in repr(answer).replace(str(tenants), "")


def test_a_folder_lists_none_of_another_users_files(tenants: Path) -> None:
    # Given ivy's folder, which holds a link to kim's secret
    # When ivy predicts on the folder, and on the link by name
    folder, _ = run_predict(str(tenants / "ivy"), tenants, "ivy")
    named, _ = run_predict(str(tenants / "ivy" / "linked.jpg"), tenants, "ivy")

    # Then the folder yields her own picture only; the link she named is refused, under its own name
    assert [(p["source"], p["error"]) for p in folder] == [(str(tenants / "ivy" / "own.jpg"), None)]
    assert (
        named[0]["source"] == str(tenants / "ivy" / "linked.jpg")
        and "not in the folder of user 'ivy'" in (named[0]["error"])
    )
    assert "secret-plan" not in repr(folder + named)


# -- through a real worker -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    server = EmbeddedRedis(tmp_path_factory.mktemp("redis") / "redis").start()
    yield server
    server.stop()


@pytest.mark.slow
def test_a_worker_applies_ytm_max_image_pixels_and_answers_the_rest_of_the_batch(
    redis_server: EmbeddedRedis,
    base_checkpoint: Path,  # noqa: F811 - the fixture imported above
    fixtures_dir: Path,
    tmp_path: Path,
) -> None:
    # Given a worker started with YTM_MAX_IMAGE_PIXELS=1000000 and a model of ivy's
    stack: Stack = new_stack(tmp_path / "root", redis_server, base_checkpoint)
    try:
        stack.start_worker(max_image_pixels=1_000_000)
        mgr = stack.manager()
        LocalFileSystemStorage(stack.settings.storage_root).save_model(
            "ivy", base_checkpoint, "plain", ["x"], meta={"task": "detect", "imgsz": 64}
        )
        images = stack.settings.storage_root / "ivy" / "images"
        images.mkdir(parents=True)
        shutil.copyfile(fixtures_dir / "images" / "bus.jpg", images / "bus.jpg")
        os.mkfifo(images / "pipe.jpg")
        big = np.zeros((1001, 1000, 3), np.uint8)

        # When ivy sends a batch with a bomb, a FIFO, an array over the limit and a bad array among good images
        answer = mgr.infer("ivy", "plain", [str(images / "bus.jpg"), png_bomb(20000, 20000), str(images / "pipe.jpg"),
                                            big, np.zeros((4, 4), np.float64), np.zeros((64, 64, 3), np.uint8)],
                           conf=0.01)  # fmt: skip
    finally:
        stack.close()

    # Then each bad input has its own error, and the 810x1080 bus and the small array are predicted
    assert [p.error for p in answer] == [
        None, "image too large (20000\u00d720000 pixels, limit 1000000)",
        "not a regular file (a pipe, a device or a socket): skipped, never opened",
        "image too large (1000\u00d71001 pixels, limit 1000000)", answer[4].error, None,
    ]  # fmt: skip
    assert answer[4].error and "float64" in answer[4].error
    assert (answer[0].width, answer[0].height, answer[5].width) == (810, 1080, 64)


def test_another_users_checkpoint_is_refused_unread_exactly_like_a_missing_one(tmp_path: Path) -> None:
    # Given kim's checkpoint (a file that is no checkpoint at all), and a producer on its own Redis
    root = tmp_path / "root"
    (root / "kim" / "models").mkdir(parents=True)
    (root / "kim" / "models" / "real.pt").write_bytes(b"PK\x03\x04 not a checkpoint")
    (root / "mal" / "data").mkdir(parents=True)
    server = EmbeddedRedis(tmp_path / "redis").start()
    mgr = YoloTaskManager(LocalFileSystemStorage(root), settings=Settings(storage_root=root, redis_url=server.url))
    errors = []
    try:
        # When mal trains from it, and from a file of kim's that does not exist
        for name in ("real.pt", "missing.pt"):
            with pytest.raises(InvalidInput) as info:
                mgr.train("mal", str(root / "kim" / "models" / name), str(root / "mal" / "data"), 1)
            errors.append(str(info.value).replace(name, "X"))
    finally:
        mgr.close()
        server.stop()

    # Then both are refused for being kim's, in the same words: nothing tells mal that one exists
    assert errors[0] == errors[1] and "not in the folder of user 'mal'" in errors[0]
