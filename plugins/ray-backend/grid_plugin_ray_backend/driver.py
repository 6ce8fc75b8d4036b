"""The Ray driver grid runs on the head (through its transport) to submit, follow, list and stop jobs.

    python -m grid_plugin_ray_backend.driver --address HOST:PORT --namespace NS --head NODE COMMAND ...

A Ray driver must run on a node of its cluster, and the machine running the CLI need not be one,
so the CLI runs this module on the head. Its stdout carries only frames, one JSON array a line:
`["out", text]` and `["err", text]` for what the job wrote to its stdout and stderr, `["event",
{...}]` for grid's own messages, `["result", value]` for an answer. Job output travels inside a
frame as a JSON string, so nothing a job prints can pass for grid's messages, whatever its size.
Anything else that writes to this process's fd 1 (Ray does) is sent to stderr, which holds only
diagnostics. The exit status is the job's.

`run` reads its job spec and `control` its params and config as one JSON document on stdin,
never from argv: they hold the job's environment and grid's whole config, and any user of the
node can read a command line.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import signal
import sys
import time
from typing import Any

from grid_plugin_ray_backend.jobs import REGISTRY, RUNNER, JobRegistry, JobRunner
from grid_plugin_ray_backend.layout import node_resource

POLL_SECONDS = 0.1
DRIVER_ERROR = 70  # grid's own failure; the @grid error event carries the message


class DriverError(Exception):
    pass


_frames: Any = None  # the real stdout, once main() has moved fd 1 aside


def frame(kind: str, value: Any) -> None:
    """Write one frame; OSError when nobody reads any more."""
    out = _frames or sys.stdout
    out.write(json.dumps([kind, value]) + "\n")
    out.flush()


def event(kind: str, **fields: Any) -> None:
    with contextlib.suppress(OSError):  # the CLI has gone; what matters now is the work, not the message
        frame("event", {"event": kind, **fields})


def _cluster_message(data: dict[str, Any], ignore_prefix: bool = False) -> None:
    """Ray's messages about the cluster (a node marked dead, ...) go to stderr, never into the job's stdout."""
    with contextlib.suppress(OSError):
        for line in data.get("lines", []):
            sys.stderr.write(f"(ray) {line}\n")
        sys.stderr.flush()


def connect(args: argparse.Namespace) -> Any:
    import ray
    import ray._private.worker

    # Ray's driver prints the cluster's error messages to stdout (listen_error_messages).
    ray._private.worker.print_to_stdstream = _cluster_message
    try:
        ray.init(address=args.address, namespace=args.namespace, logging_level=logging.ERROR,
                 log_to_driver=False, configure_logging=True)
    except Exception as exc:  # Ray raises ConnectionError, RuntimeError or its own
        raise DriverError(f"cannot connect to the Ray cluster at {args.address}: {exc}") from None
    return ray


def registry(ray: Any, args: argparse.Namespace, create: bool = False) -> Any:
    if create:
        cls = ray.remote(JobRegistry)
        return cls.options(name=REGISTRY, lifetime="detached", get_if_exists=True, num_cpus=0,
                           resources={node_resource(args.head): 0.001}).remote()
    try:
        return ray.get_actor(REGISTRY)
    except ValueError:
        return None


def follow(ray: Any, reg: Any, job_id: str, offset: int = 0, wait: bool = True, ended: Any = None) -> int:
    """Copy the job's output to ours until it ends (or until caught up, without wait); its exit status."""
    stop_requested = False
    while True:
        try:
            chunks, offset, info = ray.get(reg.read.remote(job_id, offset))
        except KeyboardInterrupt:
            if stop_requested:
                raise
            stop_requested = True
            event("stopping", id=job_id)
            stop_job(ray, reg, job_id)
            continue
        if info is None:
            raise DriverError(f"no job {job_id!r}")
        try:
            for stream, text in chunks:
                frame("out" if stream == "stdout" else "err", text)
        except OSError:  # nobody reads any more (the CLI was interrupted): stop the job, as Ctrl-C does
            raise KeyboardInterrupt from None
        if info["state"] not in ("pending", "running"):
            return int(info["exit_status"] if info["exit_status"] is not None else 1)
        if not wait and not chunks:
            return 0
        if ended is not None:  # the runner's `finished` call: it fails if the runner dies first
            ready, _ = ray.wait([ended], timeout=0)
            if ready:
                try:
                    ray.get(ended)
                except Exception as exc:  # the runner could not start, or was lost before recording an end
                    _, _, info = ray.get(reg.read.remote(job_id, offset))
                    if info and info["state"] in ("pending", "running"):
                        where = info.get("node", "its node")
                        reason = (f"job {job_id} was lost with node {where} (unreachable, or its Ray died): "
                                  f"{type(exc).__name__}") if info["state"] == "running" else \
                            f"job {job_id} failed to start on {where}: {exc}"
                        ray.get(reg.update.remote(job_id, {"state": "failed", "ended": time.time(),
                                                           "reason": reason}))
                        raise DriverError(reason) from None
                ended = None
        if not chunks:
            time.sleep(POLL_SECONDS)


def stop_job(ray: Any, reg: Any, job_id: str) -> dict[str, Any]:
    try:
        runner = ray.get_actor(RUNNER.format(job_id))
    except ValueError:
        runner = None
    if runner is not None:
        with contextlib.suppress(Exception):  # it ended meanwhile
            ray.get(runner.stop.remote(), timeout=30)
    _, _, info = ray.get(reg.read.remote(job_id, 0))
    if info is None:
        raise DriverError(f"no job {job_id!r}")
    deadline = time.monotonic() + 10
    while info["state"] in ("pending", "running") and time.monotonic() < deadline:
        if runner is None or info["state"] == "pending":
            ray.get(reg.update.remote(job_id, {"state": "stopped", "ended": time.time()}))
            if runner is not None:
                ray.kill(runner)
        time.sleep(POLL_SECONDS)
        _, _, info = ray.get(reg.read.remote(job_id, 0))
    return dict(info)


def newest_node_id(ray: Any, name: str) -> str:
    """The node id behind a grid node name: the newest alive one, because after a repair the GCS
    lists the killed raylet as alive too until its health checks fail, with the same resource."""
    from ray._private.worker import global_worker

    resource = node_resource(name)
    found = [(info.start_time_ms, node_id.hex())
             for node_id, info in global_worker.gcs_client.get_all_node_info(timeout=30).items()  # type: ignore[attr-defined]
             if info.state == 0 and resource in info.resources_total]
    if not found:
        raise DriverError(f"node {name} is not in the Ray cluster")
    return max(found)[1]


def read_input() -> dict[str, Any]:
    """The JSON object the CLI wrote to our stdin."""
    text = sys.stdin.buffer.read().decode("utf-8", "surrogateescape")
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise DriverError(f"the driver's input on stdin is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise DriverError("the driver's input on stdin is not a JSON object")
    return data


def cmd_run(args: argparse.Namespace) -> int:
    spec = read_input()
    ray = connect(args)
    reg = registry(ray, args, create=True)
    job_id, node = spec["job_id"], spec["node"]
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    node_id = newest_node_id(ray, node)
    ray.get(reg.add.remote({"id": job_id, "node": node, "argv": spec["argv"], "cwd": spec.get("cwd"),
                            "cpus": spec["cpus"], "gpus": spec["gpus"], "memory_bytes": spec["memory_bytes"]}))
    options: dict[str, Any] = {
        "name": RUNNER.format(job_id), "lifetime": "detached", "max_concurrency": 4, "max_restarts": 0,
        "num_cpus": spec["cpus"], "num_gpus": spec["gpus"], "resources": {node_resource(node): 0.001},
    }
    if spec["memory_bytes"]:
        options["memory"] = spec["memory_bytes"]
    options["scheduling_strategy"] = NodeAffinitySchedulingStrategy(node_id, soft=False)
    if spec.get("boost"):  # inside the boost's reservation on its node: only this target's jobs go there
        from ray.util.placement_group import get_placement_group
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        try:
            group = get_placement_group(spec["boost"])
        except ValueError:
            raise DriverError(f"boost reservation {spec['boost']} is gone (released or expired)") from None
        options["scheduling_strategy"] = PlacementGroupSchedulingStrategy(group, placement_group_bundle_index=0)
    env = {**spec.get("env", {}), "RAY_ADDRESS": args.address}
    runner = ray.remote(JobRunner).options(**options).remote(job_id, spec["argv"], spec.get("cwd"), env,
                                                             args.namespace, spec.get("timeout_seconds"),
                                                             spec.get("retries", 0))
    event("job", id=job_id, node=node)
    if args.detach:
        return 0
    return follow(ray, reg, job_id, ended=runner.finished.remote())


def cmd_list(args: argparse.Namespace) -> int:
    ray = connect(args)
    reg = registry(ray, args)
    frame("result", ray.get(reg.list.remote()) if reg else [])
    return 0


def cmd_logs(args: argparse.Namespace) -> int:
    ray = connect(args)
    reg = registry(ray, args)
    if reg is None:
        raise DriverError(f"no job {args.job_id!r}")
    return follow(ray, reg, args.job_id, wait=args.follow)


def cmd_stop(args: argparse.Namespace) -> int:
    ray = connect(args)
    reg = registry(ray, args)
    if reg is None:
        raise DriverError(f"no job {args.job_id!r}")
    frame("result", stop_job(ray, reg, args.job_id))
    return 0


CONTROL_ACTIONS = {"status", "configure", "hold", "release", "boost", "boost_release"}


def controller(ray: Any, args: argparse.Namespace, config: dict[str, Any]) -> Any:
    """The cluster's offload controller, started on the head on first use; Ray restarts it if it dies."""
    from grid_plugin_ray_backend.controller import CONTROLLER, OffloadController

    return ray.remote(OffloadController).options(
        name=CONTROLLER, lifetime="detached", get_if_exists=True, num_cpus=0, max_restarts=-1,
        resources={node_resource(args.head): 0.001}).remote(config, args.namespace)


def cmd_control(args: argparse.Namespace) -> int:
    from grid_plugin_ray_backend.controller import ControllerError

    if args.action not in CONTROL_ACTIONS:
        raise DriverError(f"unknown controller action {args.action!r}")
    data = read_input()
    ray = connect(args)
    ctl = controller(ray, args, data["config"])
    try:
        result = ray.get(getattr(ctl, args.action).remote(**data["params"]), timeout=120)
    except ray.exceptions.RayTaskError as exc:
        if isinstance(exc.cause, ControllerError):
            raise DriverError(str(exc.cause)) from None
        raise
    frame("result", result)
    return 0


def _interrupt(_sig: int, _frame: Any) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="grid-driver")
    parser.add_argument("--address", required=True)
    parser.add_argument("--namespace", required=True)
    parser.add_argument("--head", required=True)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run")
    run.add_argument("--detach", action="store_true")  # the job spec comes on stdin
    sub.add_parser("list")
    logs = sub.add_parser("logs")
    logs.add_argument("--follow", action="store_true")
    logs.add_argument("job_id")
    stop = sub.add_parser("stop")
    stop.add_argument("job_id")
    control = sub.add_parser("control")
    control.add_argument("action")  # {"params": ..., "config": ...} comes on stdin
    args = parser.parse_args(argv)
    global _frames
    _frames = os.fdopen(os.dup(1), "w", encoding="utf-8")
    os.dup2(2, 1)  # whatever else writes to stdout (Ray, C code) lands among the diagnostics
    sys.stdout = sys.stderr
    # A closed SSH session or a terminated CLI stops a followed job as Ctrl-C does.
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _interrupt)
    commands = {"run": cmd_run, "list": cmd_list, "logs": cmd_logs, "stop": cmd_stop, "control": cmd_control}
    try:
        return commands[args.command](args)
    except DriverError as exc:
        event("error", message=str(exc))
        return DRIVER_ERROR
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
