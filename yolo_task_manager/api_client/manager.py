"""``YoloTaskManager``: the producer API. It validates, records and enqueues; workers train."""

from __future__ import annotations

import contextlib
import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import redis
from celery.exceptions import TimeoutError as CeleryTimeout

from yolo_task_manager.api_client.arguments import (
    Callbacks,
    area_of,
    check_device,
    check_duration,
    check_json,
    check_name,
    check_path,
    check_redis_url,
    check_seconds,
    check_status,
    check_timeout,
    validate_callbacks,
)
from yolo_task_manager.api_client.feed import FeedSource, check_after, read_feed, read_feed_with_ticks
from yolo_task_manager.api_client.inference import (
    EXPORT_OPTIONS,
    PREDICT_OPTIONS,
    InferenceHandle,
    check_options,
    check_threshold,
    encode_sources,
    raise_failure,
)
from yolo_task_manager.api_client.sse import sse_stream
from yolo_task_manager.api_client.subscriber import Subscriber
from yolo_task_manager.api_client.validation import (
    check_task_fits,
    parse_duration,
    resolve_base_model,
    validate_epochs,
    validate_hyp,
)
from yolo_task_manager.broker.embedded import EmbeddedRedis
from yolo_task_manager.broker.local_worker import LocalWorker
from yolo_task_manager.constants import EXPORT_FORMATS, EXPORT_TASK, INFER_TASK
from yolo_task_manager.context import ProducerContext
from yolo_task_manager.datasets import inspect_dataset
from yolo_task_manager.devices import device_matches, gpu_first, infer_queue, normalize_device
from yolo_task_manager.errors import (
    BrokerUnavailable,
    InvalidInput,
    InvalidTransition,
    NoLiveWorker,
    StorageError,
    WaitTimeout,
)
from yolo_task_manager.ids import check_access, validate_id
from yolo_task_manager.predictions import Prediction
from yolo_task_manager.redact import mask_url, redact, shown
from yolo_task_manager.settings import Settings
from yolo_task_manager.storage import IStorage, LocalFileSystemStorage
from yolo_task_manager.values import Event, EventType, ModelMeta, Run, RunSpec, RunStatus

__all__ = ["YoloTaskManager"]


class YoloTaskManager:
    """Train YOLO models for many users on Celery workers, one per device.

    With no ``redis_url`` it is self-contained: it starts an embedded Redis and a worker for
    ``default_device`` and stops them on ``close()``. With ``redis_url`` it only enqueues, and
    workers started with ``ytm worker --device ...`` anywhere do the work.

    Args:
        storage_backend: where models and runs live; ``LocalFileSystemStorage`` on ``storage_root``
            by default. Workers must reach the same storage (a shared volume).
        default_device: "cpu", "cuda:N", "cuda" (any GPU) or "auto"; the device of the embedded worker.
    """

    def __init__(
        self,
        storage_backend: IStorage | None = None,
        default_device: str = "auto",
        *,
        redis_url: str | None = None,
        database_url: str | None = None,
        global_limit: int | None = None,
        per_user_limit: int | None = None,
        settings: Settings | None = None,
    ) -> None:
        root = storage_backend.root if isinstance(storage_backend, LocalFileSystemStorage) else None
        settings = settings or Settings.from_env()
        self.settings = settings.replace(
            **{k: v for k, v in dict(storage_root=root, redis_url=redis_url, database_url=database_url,
                                     global_limit=global_limit, per_user_limit=per_user_limit).items()
               if v is not None}
        )  # fmt: skip
        check_redis_url(self.settings.redis_url)
        self.default_device = normalize_device(check_device(default_device))
        self._redis_server: EmbeddedRedis | None = None
        self._worker: LocalWorker | None = None
        try:
            if not self.settings.redis_url:
                self._start_embedded(storage_backend)
            self._ctx = ProducerContext(self.settings, storage=storage_backend)
            self._ctx.redis.ping()
        except redis.exceptions.RedisError as exc:
            self.close()
            url = mask_url(self.settings.redis_url)
            raise BrokerUnavailable(f"cannot reach Redis at {url}: {redact(str(exc))}") from exc
        except OSError as exc:
            self.close()
            raise StorageError(f"cannot set up {self.settings.state_dir}: {exc}") from exc
        except BaseException:
            self.close()
            raise
        self._feed_source = FeedSource(self._ctx.redis, self._ctx.keys, self._ctx.registry.events,
                                       self.settings.redis_patience)  # fmt: skip
        self._subscriber = Subscriber(self._feed_source)
        self._subscriber.start()

    def _start_embedded(self, storage_backend: IStorage | None) -> None:
        custom = storage_backend is not None and not isinstance(storage_backend, LocalFileSystemStorage)
        if custom and not self.settings.storage_factory:
            raise InvalidInput(
                "the embedded worker cannot share a custom storage object: set settings.storage_factory "
                "('module:callable') so workers can build the same backend"
            )
        if self.settings.sandbox is None:  # the embedded default sandboxes whenever this machine can
            self.settings = self.settings.replace(sandbox="auto")
        self._redis_server = EmbeddedRedis(self.settings.state_dir / "redis").start()
        self.settings = self.settings.replace(redis_url=self._redis_server.url)
        device = "cpu" if self.default_device in ("auto", "cpu") else self.default_device
        if device == "cuda":
            device = "cuda:0"
        self._worker = LocalWorker(self.settings, device).start()

    # -- training ---------------------------------------------------------------------------------

    def train(
        self,
        user_id: str,
        base_model: str,
        dataset_dir: str,
        epochs: int,
        run_name: str | None = None,
        callbacks: Callbacks | None = None,
        *,
        device: str | None = None,
        max_duration: str | float | None = None,
        **hyp: Any,
    ) -> str:
        """Queue a training run and return its ``run_id`` at once.

        Args:
            base_model: a ``.pt`` file name in ``{storage_root}/_system/pretrained/``, a path in your folder, or a
                model yaml such as ``yolov8n.yaml`` (trains from scratch).
            dataset_dir: a folder with ``data.yaml`` (YOLO format) or ``train/``/``val/`` class folders.
            callbacks: ``on_metrics(run_id, epoch, metrics)``, ``on_status(run_id, status, reason)``,
                ``on_event(event)``; called in this process, in order, once per event.
            device: overrides ``default_device`` for this run.
            max_duration: seconds or "30m"/"2h"; past it the run ends ``timed_out``, resumable.
            **hyp: ultralytics training arguments (imgsz, batch, lr0, patience, ...).

        Raises:
            InvalidInput, WeightsUnavailable: nothing was queued.
            LimitExceeded: the user already has ``max_queued_per_user`` runs queued; nothing was queued.
        """
        base_model, dataset_dir = check_path(base_model, "base_model"), check_path(dataset_dir, "dataset_dir")
        if run_name is not None and not isinstance(run_name, str):
            raise InvalidInput(f"run_name must be a string or None, got {shown(run_name)}")
        device, max_duration = check_device(device), check_duration(max_duration)
        check_json(hyp, "training arguments")
        if os.path.isabs(base_model):  # before the checkpoint is read: another user's file must stay unopened
            check_access(base_model, self.settings.storage_root, validate_id(user_id, "user_id"),
                         also=(self.settings.pretrained_dir, *self.settings.readable_dirs(user_id)))  # fmt: skip
        user_id = validate_id(user_id, "user_id")
        run_name = validate_id(run_name or f"run-{uuid.uuid4().hex[:8]}", "run_name")
        epochs = validate_epochs(epochs)
        callbacks = validate_callbacks(callbacks)
        hyp = validate_hyp(hyp)
        device_request = normalize_device(device) if device is not None else self.default_device
        seconds = parse_duration(max_duration)
        root, pretrained = self.settings.storage_root, self.settings.pretrained_dir
        shared = self.settings.readable_dirs(user_id)
        area = root / user_id
        model_ref, model_task = resolve_base_model(base_model, pretrained, area=area)
        if Path(model_ref).is_absolute():
            check_access(model_ref, root, user_id, also=(pretrained, *shared))
        dataset_dir = str(check_access(dataset_dir, root, user_id, also=shared))
        dataset = inspect_dataset(dataset_dir, area=area_of(Path(dataset_dir), area, shared))
        check_task_fits(model_task, dataset.task, base_model)
        spec = RunSpec(
            user_id=user_id, run_name=run_name, base_model=model_ref, dataset_dir=dataset_dir,
            task=model_task, epochs=epochs, device=device_request, hyp=hyp, max_duration=seconds,
        )  # fmt: skip
        run = self._ctx.registry.create_run(spec, max_waiting=self.settings.max_queued_per_user)
        if callbacks:
            self._subscriber.follow(run.run_id, callbacks)
        try:
            self._ctx.bus.publish(run.run_id, user_id, type=EventType.STATUS, status=RunStatus.QUEUED, epochs=epochs)
            self._ctx.dispatcher.tick()  # a few queries per free device and waiting user, whatever the backlog
        except redis.exceptions.RedisError as exc:
            raise BrokerUnavailable(
                f"run {run.run_id} is recorded as queued, but Redis failed ({exc}): the workers dispatch it when "
                "Redis is back; do not submit it again"
            ) from exc
        return run.run_id

    def stop(self, user_id: str, run_id: str) -> bool:
        """Ask a run to stop; True if it was queued, dispatched or running. A running one keeps a resumable last.pt."""
        run = self.get_run(user_id, run_id)
        if run.is_terminal:
            return False
        self._ctx.stops.request(run_id)
        if run.status in (RunStatus.QUEUED, RunStatus.DISPATCHED):
            # If it started meanwhile, its worker sees the flag; a message that arrives later is skipped.
            with contextlib.suppress(InvalidTransition):
                self._ctx.transition(run_id, RunStatus.STOPPED, reason="stopped by user before it started")
        return True

    def resume(self, user_id: str, run_id: str) -> None:
        """Queue a stopped, failed, interrupted or timed-out run again; it continues from last.pt.

        Raises:
            InvalidTransition: the run is queued, dispatched, running or completed.
        """
        run = self.get_run(user_id, run_id)
        try:
            self._ctx.transition(run_id, RunStatus.QUEUED, reason="resumed by user")
        except InvalidTransition:
            raise InvalidTransition(
                f"run {run_id} is {run.status.value}: only stopped, failed, interrupted or timed-out runs resume"
            ) from None
        self._subscriber.follow(run_id)
        self._ctx.dispatcher.tick()

    # -- reading ----------------------------------------------------------------------------------

    def get_run(self, user_id: str, run_id: str) -> Run:
        """The run; ``NotFound`` for a missing run and for another user's run alike."""
        user_id = validate_id(user_id, "user_id")
        run_id = validate_id(run_id, "run_id")
        return self._ctx.registry.get_run(run_id, user_id)

    def list_runs(self, user_id: str, status: RunStatus | str | None = None) -> list[Run]:
        """The user's runs, oldest first; ``status`` (a ``RunStatus`` or its value, "queued") keeps those in it."""
        status = check_status(status)
        statuses = [status] if status is not None else None
        return self._ctx.registry.list_runs(validate_id(user_id, "user_id"), statuses)

    def get_metrics(self, user_id: str, run_id: str) -> list[tuple[int, dict[str, float]]]:
        """(epoch, metrics) for each finished epoch, from the registry."""
        self.get_run(user_id, run_id)
        return self._ctx.registry.get_metrics(run_id)

    def wait(self, user_id: str, run_id: str, timeout: float | None = None, poll: float = 0.5) -> Run:
        """Block until the run is completed, failed, stopped or timed out; return it.

        Raises:
            WaitTimeout: ``timeout`` seconds passed first (the run goes on).
        """
        timeout, poll = check_timeout(timeout, "timeout"), check_seconds(poll, "poll", low=0.01)
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            run = self.get_run(user_id, run_id)
            if run.is_terminal:
                return run
            if deadline is not None and time.monotonic() > deadline:
                raise WaitTimeout(f"run {run_id} is still {run.status.value} after {timeout:g}s")
            time.sleep(poll)

    # -- inference and export ---------------------------------------------------------------------

    def infer_async(
        self,
        user_id: str,
        model_name: str,
        images: Any,
        conf: float = 0.25,
        iou: float = 0.7,
        *,
        device: str | None = None,
        export: str | None = None,
        save_annotated: bool = False,
        **opts: Any,
    ) -> InferenceHandle:
        """Queue an inference on a worker and return a handle; see ``infer``."""
        device, export = check_device(device), check_name(export, "export")
        if not isinstance(save_annotated, (bool, int)):
            raise InvalidInput(f"save_annotated must be True or False, got {shown(save_annotated)}")
        user_id = validate_id(user_id, "user_id")
        meta = self._ctx.storage.get_model(user_id, validate_id(model_name, "model_name"))
        if export is not None and export not in meta.exports:
            raise InvalidInput(
                f"model {model_name!r} has no {export!r} export (it has {sorted(meta.exports) or 'none'}): "
                f"call export({user_id!r}, {model_name!r}, {export!r}) first"
            )
        request = {
            "request_id": uuid.uuid4().hex,
            "user_id": user_id,
            "model_name": model_name,
            "sources": encode_sources(images),
            "conf": check_threshold("conf", conf),
            "iou": check_threshold("iou", iou),
            "opts": check_options(opts, PREDICT_OPTIONS, "inference"),
            "export": export,
            "save_annotated": bool(save_annotated),
        }
        queue = infer_queue(self._worker_queue(meta, device))
        return InferenceHandle(self._ctx.app.send_task(INFER_TASK, args=[request], queue=queue))

    def infer(
        self,
        user_id: str,
        model_name: str,
        images: Any,
        conf: float = 0.25,
        iou: float = 0.7,
        *,
        timeout: float | None = 600.0,
        **options: Any,
    ) -> list[Prediction]:
        """Predict with a user's model on a worker; one ``Prediction`` per image or video frame.

        Args:
            images: a path, a folder, a glob, a video, bytes, a numpy array (BGR), or a list of these.
                Paths must be readable by the workers (the shared volume).
            device: run on this device's worker instead of the one that trained the model.
            export: use a stored export ("onnx", "torchscript", ...) instead of the PyTorch weights.
            save_annotated: draw the results into ``{root}/{user_id}/predictions/<request>/``.
            **options: imgsz, max_det, classes, agnostic_nms, augment, half, retina_masks, vid_stride.

        Raises:
            NotFound: no such model for this user. InvalidInput: bad thresholds, options or images.
        """
        timeout = check_timeout(timeout, "timeout")
        return self.infer_async(user_id, model_name, images, conf, iou, **options).get(timeout)

    def export(
        self,
        user_id: str,
        model_name: str,
        fmt: str,
        *,
        device: str | None = None,
        timeout: float = 1800.0,
        **opts: Any,
    ) -> Path:
        """Export a model ("torchscript", "onnx", "openvino", "engine"); the same request returns the stored file."""
        fmt, device = check_name(fmt, "fmt") or "", check_device(device)
        timeout = check_seconds(timeout, "timeout")
        user_id = validate_id(user_id, "user_id")
        meta = self._ctx.storage.get_model(user_id, validate_id(model_name, "model_name"))
        if fmt not in EXPORT_FORMATS:
            raise InvalidInput(f"unknown export format {fmt!r}: use one of {sorted(EXPORT_FORMATS)}")
        opts = check_options(opts, EXPORT_OPTIONS, "export")
        try:
            queue = infer_queue(self._worker_queue(meta, device or ("cuda" if fmt == "engine" else None)))
        except NoLiveWorker:
            if fmt != "engine":
                raise
            raise InvalidInput(
                "TensorRT (engine) export needs a GPU worker and none is running: start `ytm worker --device cuda:N`"
            ) from None
        result = self._ctx.app.send_task(EXPORT_TASK, args=[user_id, model_name, fmt, opts], queue=queue)
        try:
            reply = result.get(timeout=timeout)
        except CeleryTimeout:
            raise WaitTimeout(f"export to {fmt} did not finish within {timeout:g}s") from None
        result.forget()
        raise_failure(reply)
        return Path(reply["path"])

    def _worker_queue(self, meta: ModelMeta, device: str | None) -> str:
        """The model's own device if its worker is up, else a live worker for ``device``/``default_device``."""
        live = gpu_first(self._ctx.dispatcher.live_queues())
        if device is None and meta.trained_on in live:
            return meta.trained_on
        request = normalize_device(device) if device is not None else self.default_device
        for queue in live:
            if device_matches(request, queue):
                return queue
        raise NoLiveWorker(f"no live worker serves device {request!r}: start one with `ytm worker --device ...`")

    def subscribe(
        self,
        user_id: str,
        run_id: str | None = None,
        after: str | None = None,
        *,
        until_done: bool = True,
        timeout: float | None = None,
    ) -> Iterator[tuple[str, Event]]:
        """Yield ``(event_id, event)`` for one run, or all of a user's runs.

        A run's feed reads the registry (the durable event log), then the run's Redis stream, with no gap
        and no duplicate; pass the last ``event_id`` you saw as ``after`` (SSE's ``Last-Event-ID``) to go on
        from there. For one run ``event_id`` is its ``seq``. With ``until_done``, a run's feed ends at its
        completed, failed, stopped or timed-out status, at once if that already happened; ``timeout`` ends a
        feed that stays quiet that long. A Redis restart does not end it: it reconnects and goes on.

        Raises:
            NotFound: no such run for this user. InvalidInput: an ``after`` this feed never gave out.
            BrokerUnavailable: while iterating, after Redis stayed away for ``redis_patience`` seconds.
        """
        user_id = validate_id(user_id, "user_id")
        if run_id is not None:
            run_id = self.get_run(user_id, run_id).run_id
        return read_feed(self._feed_source, user_id=user_id, run_id=run_id, after=after, until_done=until_done,
                         timeout=timeout)  # fmt: skip

    def sse(self, user_id: str, run_id: str, last_event_id: str | None = None) -> Iterator[str]:
        """A run's feed as Server-Sent Events text, with a ``: keep-alive`` comment after each ``sse_keepalive``
        seconds of quiet, for a web framework to stream (see ``examples/``).

        Raises:
            NotFound, InvalidInput: before the stream starts, as ``subscribe`` does.
        """
        user_id = validate_id(user_id, "user_id")
        run_id = self.get_run(user_id, run_id).run_id
        feed = read_feed_with_ticks(self._feed_source, user_id=user_id, run_id=run_id, after=last_event_id,
                                    tick=self.settings.sse_keepalive)  # fmt: skip
        return sse_stream(feed)

    def events(self, user_id: str, run_id: str, after_seq: int = 0) -> list[Event]:
        """The run's events with ``seq > after_seq``, oldest first, from the registry (complete also after
        Redis lost its data).

        Raises:
            NotFound: no such run for this user. InvalidInput: ``after_seq`` is not a seq.
        """
        run = self.get_run(user_id, run_id)
        after = check_after(after_seq, per_run=True)
        return self._ctx.registry.events.read(run.run_id, after_seq=cast(int, after or 0))

    def list_models(self, user_id: str) -> list[ModelMeta]:
        return self._ctx.storage.list_models(validate_id(user_id, "user_id"))

    def delete_model(self, user_id: str, model_name: str) -> bool:
        return self._ctx.storage.delete_model(validate_id(user_id, "user_id"), validate_id(model_name, "model_name"))

    # -- lifetime ---------------------------------------------------------------------------------

    def close(self) -> None:
        """Stop the subscriber, and in embedded mode the worker (requeueing its run) and Redis."""
        if subscriber := getattr(self, "_subscriber", None):
            subscriber.close()
        if self._worker is not None:
            self._worker.stop()
            self._worker = None
        if ctx := getattr(self, "_ctx", None):
            ctx.close()
        if self._redis_server is not None:
            self._redis_server.stop()
            self._redis_server = None

    def __enter__(self) -> YoloTaskManager:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
