"""``ytm metrics``: a Prometheus exporter of runs, queues, workers, training progress and inference latency.

Every scrape reads the registry and Redis afresh (a few grouped queries and two hashes), so the exporter keeps
no state and any number of them agree. Runs are labelled by run id and user, never by the names tenants chose.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator

import redis
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

from yolo_task_manager.broker.keys import Keys
from yolo_task_manager.broker.presence import WorkerPresence
from yolo_task_manager.broker.usage import BUCKETS, InferenceStats
from yolo_task_manager.errors import BrokerUnavailable, InvalidInput, YoloTaskManagerError
from yolo_task_manager.registry import Registry
from yolo_task_manager.settings import Settings
from yolo_task_manager.values import RunStatus

__all__ = ["RunsCollector", "serve"]

log = logging.getLogger(__name__)


class RunsCollector(Collector):
    """Args: live_within: seconds since its last heartbeat within which a worker counts as live."""

    def __init__(self, registry: Registry, client: redis.Redis, keys: Keys, live_within: float = 6.0) -> None:
        self.registry, self.client, self.keys, self.live_within = registry, client, keys, live_within

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("ytm_exporter_source_up", "1 when this scrape could read the source", labels=["source"])
        try:
            yield from self._from_registry()
            up.add_metric(["registry"], 1)
        except YoloTaskManagerError as exc:
            log.warning("scrape: the registry failed: %s", exc)
            up.add_metric(["registry"], 0)
        try:
            yield from self._from_redis()
            up.add_metric(["redis"], 1)
        except redis.exceptions.RedisError as exc:
            log.warning("scrape: Redis failed: %s", exc)
            up.add_metric(["redis"], 0)
        yield up

    def _from_registry(self) -> Iterator[Metric]:
        runs = GaugeMetricFamily("ytm_runs", "Runs by state and user", labels=["status", "user"])
        for status, user, count in self.registry.count_runs():
            runs.add_metric([status, user], count)
        waiting = GaugeMetricFamily("ytm_runs_waiting", "Runs waiting to be dispatched, by device", labels=["device"])
        for device, count in self.registry.count_waiting().items():
            waiting.add_metric([device], count)
        labels = ["run_id", "user", "queue"]
        epoch = GaugeMetricFamily("ytm_run_epoch", "Last reported epoch of a running run", labels=labels)
        epochs = GaugeMetricFamily("ytm_run_epochs", "Epochs a running run will train", labels=labels)
        seconds = GaugeMetricFamily("ytm_run_epoch_seconds", "Duration of a running run's last epoch", labels=labels)
        fitness = GaugeMetricFamily(
            "ytm_run_fitness", "Key metric (ultralytics' fitness) of a running run's last epoch", labels=labels
        )
        for run in self.registry.list_runs(statuses=[RunStatus.RUNNING]):
            values = [run.run_id, run.user_id, run.queue or ""]
            epochs.add_metric(values, run.epochs)
            history = self.registry.get_metrics(run.run_id)
            if not history:
                continue
            last_epoch, last = history[-1]
            epoch.add_metric(values, last_epoch)
            if "fitness" in last:
                fitness.add_metric(values, last["fitness"])
            before = history[-2][1].get("elapsed", 0.0) if len(history) > 1 else 0.0
            if "elapsed" in last:
                seconds.add_metric(values, max(last["elapsed"] - before, 0.0))
        yield from (runs, waiting, epoch, epochs, seconds, fitness)

    def _from_redis(self) -> Iterator[Metric]:
        workers = GaugeMetricFamily("ytm_workers_live", "1 for each queue a live worker serves", labels=["queue"])
        for queue in WorkerPresence(self.client, self.keys).live(self.live_within):
            workers.add_metric([queue], 1)
        latency = HistogramMetricFamily(
            "ytm_inference_request_seconds", "Inference requests by worker queue and outcome, and their latency",
            labels=["queue", "outcome"],
        )  # fmt: skip
        for (queue, outcome), counts in sorted(InferenceStats(self.client, self.keys).read().items()):
            cumulative, total = [], 0
            for bound, n in zip(BUCKETS, counts.buckets, strict=True):
                total += n
                cumulative.append(("+Inf" if bound == float("inf") else f"{bound:g}", total))
            latency.add_metric([queue, outcome], cumulative, counts.seconds)
        yield from (workers, latency)


def serve(settings: Settings, address: str, port: int, stop: threading.Event | None = None) -> None:
    """Serve /metrics on ``address:port`` until ``stop`` is set (forever by default)."""
    from prometheus_client import start_http_server

    if not settings.redis_url:
        raise BrokerUnavailable("ytm metrics needs YTM_REDIS_URL (and YTM_DATABASE_URL for a shared registry)")
    settings.state_dir.mkdir(parents=True, exist_ok=True)  # the default SQLite registry lives there
    registry = Registry(settings.sql_url)
    client = redis.Redis.from_url(settings.redis_url, socket_timeout=5, socket_connect_timeout=5)
    metrics = CollectorRegistry()
    live_within = min(3 * settings.tick_interval, settings.lease_ttl)  # as the dispatcher counts them
    metrics.register(RunsCollector(registry, client, Keys(settings.key_prefix), live_within))
    try:
        server, thread = start_http_server(port, addr=address, registry=metrics)
    except OSError as exc:
        registry.close()
        raise InvalidInput(f"ytm metrics cannot listen on {address}:{port}: {exc.strerror}") from None
    log.info("serving Prometheus metrics on http://%s:%d/metrics", address, port)
    try:
        (stop or threading.Event()).wait()
    finally:
        server.shutdown()
        thread.join()
        client.close()
        registry.close()
