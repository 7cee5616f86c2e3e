"""Inference, export and the model registry for every task type, through real workers."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from tests.integration.conftest import TINY, Stack, new_stack
from yolo_task_manager import InvalidInput, NotFound, RunStatus, YoloTaskManager

pytestmark = pytest.mark.slow

LOW = 1e-6  # models trained for one epoch from scratch are not confident: look at every candidate
TASKS = {  # model name -> (base model, fixture dataset)
    "det": ("yolov8n.pt", "coco8"),
    "seg": ("yolov8n-seg.yaml", "coco8-seg"),
    "pose": ("yolov8n-pose.yaml", "coco8-pose"),
    "obb": ("yolov8n-obb.yaml", "dota8"),
    "cls": ("babymelvin-cls.pt", "mnist160"),
    "cls10": ("yolov8n-cls.yaml", "imagenet10"),
}


@pytest.fixture(scope="module")
def served(redis_server, base_checkpoint, fixtures_dir, tmp_path_factory):
    """One worker and one trained model per task type for user "ivy" (the classifier from a third-party
    checkpoint)."""
    root = tmp_path_factory.mktemp("served")
    stack = new_stack(root / "root", redis_server, base_checkpoint, shared=(root / "data", fixtures_dir))
    shutil.copyfile(fixtures_dir / "weights" / "third_party" / "yolo11n-cls_mnist160_babymelvin.pt",
                    stack.settings.pretrained_dir / "babymelvin-cls.pt")  # fmt: skip
    stack.start_worker()
    mgr = stack.manager()
    runs = {}
    for name, (base, dataset) in TASKS.items():
        data = shutil.copytree(fixtures_dir / "datasets" / dataset, root / "data" / dataset)
        runs[name] = mgr.train("ivy", base, str(data), epochs=1, run_name=name, **TINY)
    for name, run_id in runs.items():
        run = mgr.wait("ivy", run_id, timeout=600)
        assert run.status is RunStatus.COMPLETED, f"{name}: {run.reason}"
    yield stack, mgr
    stack.close()


def test_list_models_describes_every_model(served):
    _, mgr = served
    models = {m.name: m for m in mgr.list_models("ivy")}
    assert {n: m.task for n, m in models.items()} == {
        "cls": "classify", "cls10": "classify", "det": "detect", "obb": "obb", "pose": "pose", "seg": "segment",
    }  # fmt: skip
    assert models["cls"].labels == tuple(str(i) for i in range(10))
    assert models["det"].labels[0] == "person" and models["det"].imgsz == 64
    assert models["cls"].key_metric is not None and models["cls"].key_metric[0] == "top1"
    assert models["seg"].key_metric is not None and models["seg"].key_metric[0] == "mAP50-95"
    assert all(m.run_id and m.size_bytes > 100_000 and m.trained_on for m in models.values())


def test_detect_predictions_lie_inside_each_image_and_are_drawn(served, fixtures_dir: Path):
    # Given
    stack, mgr = served
    images = [fixtures_dir / "images" / "bus.jpg", fixtures_dir / "images" / "zidane.jpg"]

    # When
    predictions = mgr.infer("ivy", "det", images, conf=LOW, save_annotated=True)

    # Then
    assert [(p.source, p.width, p.height) for p in predictions] == [
        (str(images[0]), 810, 1080), (str(images[1]), 1280, 720),
    ]  # fmt: skip
    labels = set(next(m for m in mgr.list_models("ivy") if m.name == "det").labels)
    for p in predictions:
        assert p.ok and p.task == "detect" and p.detections
        for d in p.detections:
            x1, y1, x2, y2 = d.box_xyxy
            assert -1 <= x1 <= x2 <= p.width + 1 and -1 <= y1 <= y2 <= p.height + 1
            assert all(0 <= v <= 1.001 for v in d.box_xywhn) and d.class_name in labels and 0 < d.confidence <= 1
        assert Path(p.annotated_path).name == Path(p.source).name and Path(p.annotated_path).stat().st_size > 1000


def test_every_input_kind_and_a_bad_one_in_the_batch(served, fixtures_dir: Path):
    import cv2

    # Given: in ivy's folder, a folder, a glob, bytes, a numpy array, a video of 3 frames, a corrupt file and an
    # unreadable video
    stack, mgr = served
    tmp_path = stack.settings.storage_root / "ivy" / "inputs"
    folder = Path(shutil.copytree(fixtures_dir / "images", tmp_path / "imgs"))
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    (tmp_path / "broken.mp4").write_bytes(b"not a video")
    frame = cv2.imread(str(folder / "bus.jpg"))
    video = tmp_path / "clip.mp4"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 5, (frame.shape[1], frame.shape[0]))
    for _ in range(3):
        writer.write(frame)
    writer.release()
    inputs = [str(folder), str(folder / "z*.jpg"), (folder / "bus.jpg").read_bytes(), frame, str(video),
              str(tmp_path / "broken.jpg"), str(tmp_path / "broken.mp4")]  # fmt: skip

    # When
    predictions = mgr.infer("ivy", "det", inputs, conf=LOW)

    # Then: one prediction per image and per frame, in input order; the bad inputs have an error each
    sources = [(Path(p.source).name, p.frame) for p in predictions]
    assert sources == [("bus.jpg", None), ("zidane.jpg", None), ("zidane.jpg", None), ("image_2.jpg", None),
                       ("image_3.jpg", None), ("clip.mp4", 0), ("clip.mp4", 1), ("clip.mp4", 2),
                       ("broken.jpg", None), ("broken.mp4", None)]  # fmt: skip
    assert [p.error for p in predictions[-2:]] == ["not a readable image", "not a readable video"]
    assert all(p.ok and p.width for p in predictions[:-2])
    assert predictions[3].width == 810 and predictions[4].height == 1080  # bytes and array arrived whole


def test_each_task_type_returns_its_own_parts(served, fixtures_dir: Path):
    _, mgr = served
    bus = fixtures_dir / "images" / "bus.jpg"
    seg, pose, obb = (mgr.infer("ivy", name, bus, conf=LOW)[0] for name in ("seg", "pose", "obb"))
    digit = next((fixtures_dir / "datasets" / "mnist160" / "test" / "7").iterdir())
    cls = mgr.infer("ivy", "cls", digit)[0]

    assert seg.detections and all(d.polygon and len(d.polygon) >= 3 for d in seg.detections[:5])
    assert pose.detections and all(d.keypoints and len(d.keypoints) == 17 for d in pose.detections[:5])
    assert obb.detections and all(d.rotated_box and len(d.rotated_box) == 5 for d in obb.detections[:5])
    assert len(cls.top_k) == 5 and {name for _, name, _ in cls.top_k} <= {str(i) for i in range(10)}
    assert cls.top_k[0][2] >= cls.top_k[-1][2] and not cls.detections


def test_an_imagenet10_classifier_lists_the_class_names_its_predictions_carry(served, fixtures_dir: Path):
    # Given: a classifier trained from scratch on imagenet10, whose class folders are ImageNet ids
    # (n01440764, ...) and whose file names hold spaces
    _, mgr = served
    imagenet10 = fixtures_dir / "datasets" / "imagenet10"
    image = imagenet10 / "val" / "n01443537" / "ILSVRC2012_val_00002241 copy.JPEG"

    # When
    model = next(m for m in mgr.list_models("ivy") if m.name == "cls10")
    prediction = mgr.infer("ivy", "cls10", image)[0]

    # Then: ultralytics shows ImageNet ids as words, and the model's labels say the same
    assert model.task == "classify" and len(model.labels) == 10 and model.labels[:2] == ("tench", "goldfish")
    assert model.key_metric is not None and model.key_metric[0] == "top1"
    assert prediction.ok and prediction.source == str(image) and len(prediction.top_k) == 5
    assert all(model.labels[class_id] == name for class_id, name, _ in prediction.top_k), prediction.top_k
    assert 0 < sum(p for *_, p in prediction.top_k) <= 1.0001


def test_repeated_inference_uses_the_cached_model(served, fixtures_dir: Path):
    _, mgr = served
    bus = fixtures_dir / "images" / "bus.jpg"
    first = mgr.infer_async("ivy", "det", bus, conf=LOW)
    first.get()
    second = mgr.infer_async("ivy", "det", bus, conf=LOW)
    second.get()
    assert first.model_loads is not None and second.model_loads == first.model_loads


def test_onnx_export_is_stored_listed_reused_and_agrees_with_pytorch(served, fixtures_dir: Path):
    # Given: the classifier (its softmax is continuous, unlike the near-tied scores of a one-epoch detector)
    _, mgr = served
    digit = next((fixtures_dir / "datasets" / "mnist160" / "test" / "3").iterdir())

    # When
    path = mgr.export("ivy", "cls", "onnx")
    again = mgr.export("ivy", "cls", "onnx")
    pt = mgr.infer("ivy", "cls", digit)[0]
    onnx = mgr.infer("ivy", "cls", digit, export="onnx")[0]
    det_path = mgr.export("ivy", "det", "onnx", imgsz=64)
    det = mgr.infer("ivy", "det", fixtures_dir / "images" / "bus.jpg", conf=LOW, export="onnx-imgsz-64")[0]

    # Then: stored beside the model, listed, reused, and the two runtimes agree
    assert path.suffix == ".onnx" and path.stat().st_size > 1_000_000 and again == path
    assert {m.name: m.exports for m in mgr.list_models("ivy")}["cls"]["onnx"] == str(path)
    assert [c for c, _, _ in onnx.top_k] == [c for c, _, _ in pt.top_k]
    assert all(abs(a - b) < 1e-3 for (_, _, a), (_, _, b) in zip(onnx.top_k, pt.top_k, strict=True))
    assert det_path.name == "model.onnx" and det.ok and det.detections and det.width == 810


def test_torchscript_and_openvino_exports(served):
    _, mgr = served
    torchscript = mgr.export("ivy", "cls", "torchscript")
    openvino = mgr.export("ivy", "cls", "openvino")
    assert torchscript.suffix == ".torchscript" and torchscript.is_file()
    assert openvino.is_dir() and any(openvino.glob("*.xml"))


def test_bad_requests_get_typed_errors(served, fixtures_dir: Path):
    _, mgr = served
    bus = fixtures_dir / "images" / "bus.jpg"
    with pytest.raises(InvalidInput, match="unknown export format 'tensorflow-lite'"):
        mgr.export("ivy", "det", "tensorflow-lite")
    with pytest.raises(InvalidInput, match="needs a GPU worker"):
        mgr.export("ivy", "det", "engine")
    for conf, iou in ((1.5, 0.7), (-0.1, 0.7), (0.25, 2)):
        with pytest.raises(InvalidInput, match="must be a number in \\[0, 1\\]"):
            mgr.infer("ivy", "det", bus, conf=conf, iou=iou)
    with pytest.raises(InvalidInput, match="unknown inference option"):
        mgr.infer("ivy", "det", bus, stream=True)
    with pytest.raises(InvalidInput, match="has no 'onnx' export"):
        mgr.infer("ivy", "det", bus, export="onnx")
    with pytest.raises(NotFound) as foreign:
        mgr.infer("mallory", "det", bus)
    with pytest.raises(NotFound) as missing:
        mgr.infer("ivy", "nope", bus)
    assert str(foreign.value).replace("mallory", "U").replace("'det'", "M") == str(missing.value).replace(
        "ivy", "U"
    ).replace("'nope'", "M")
    with pytest.raises(NotFound):
        mgr.export("mallory", "det", "onnx")


def test_deleting_a_model_during_inference_is_clean(redis_server, base_checkpoint, fixtures_dir, tmp_path):
    # Given: a model and a long inference on it
    stack: Stack = new_stack(tmp_path / "root", redis_server, base_checkpoint)
    try:
        stack.start_worker()
        mgr: YoloTaskManager = stack.manager()
        mgr._ctx.storage.save_model("kim", base_checkpoint, "doomed", ["x"], meta={"task": "detect", "imgsz": 64})
        batch = [np.zeros((64, 64, 3), np.uint8)] * 300
        handle = mgr.infer_async("kim", "doomed", batch, conf=LOW)

        # When: the model is deleted while the inference runs
        deleted = mgr.delete_model("kim", "doomed")

        # Then: the inference finished or failed cleanly, and nothing of the model is left
        try:
            assert len(handle.get()) == 300
        except NotFound as exc:
            assert "gone" in str(exc) or "no model" in str(exc)
        assert deleted is True and mgr.delete_model("kim", "doomed") is False
        assert mgr.list_models("kim") == []
        assert list((stack.settings.storage_root / "kim" / "models").iterdir()) == []
        with pytest.raises(NotFound):
            mgr.infer("kim", "doomed", batch[:1])
    finally:
        stack.close()


def test_a_glob_into_another_users_folder_reads_nothing_of_theirs(served, fixtures_dir: Path):
    # Given: a picture in another user's folder
    stack, mgr = served
    secret = stack.settings.storage_root / "kim" / "secret.jpg"
    secret.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(fixtures_dir / "images" / "bus.jpg", secret)

    # When: ivy asks for it, directly and through a glob
    glob = str(stack.settings.storage_root / "*" / "secret.jpg")
    predictions = mgr.infer("ivy", "det", [str(secret), glob])

    # Then: an error entry for each, and no pixel of it was read; the glob reads as one that matched nothing,
    # so it does not even tell that the file exists
    assert "not in the folder of user 'ivy'" in predictions[0].error and predictions[0].width is None
    assert (predictions[1].source, predictions[1].error, predictions[1].width) == (glob, "no file matches", None)
