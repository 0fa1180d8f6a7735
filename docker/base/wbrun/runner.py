"""Run one chunk of a run's manifest: stage in, run each item, publish, record.

The manifest (written by the engine's plan_tasks) lives under the run's engine prefix:
    manifest/header.json     the run, and per step its embedded files, PATHs and bundle
    manifest/chunks.jsonl    one JSON line per chunk: its step and items (argv, inputs)
    manifest/aggregate.json  the aggregate step's one item, if the study has one
and the runner records there what it finished:
    items/<step>-<index>.json          one item done (its digest, time, outputs)
    chunks/done/<n>-<items>.json       the chunk done (per item: status, exit code, time); the
                                       name carries its work items, so that one listing counts
                                       a run's progress
    chunks/failed/<n>.json             the chunk's last failed try
A retry of a chunk skips every item whose record matches its digest: no finished item runs
twice, and each item's outputs are published once it succeeded, never half. On S3 the item
records carry the tag RECORD_TAGS: the results bucket expires them after
TaskResultsExpirationInDays (storage.yaml), once no retry can need them; the chunk records,
which the Results view reads for a run's progress, are kept with the results.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from wbrun.storage import NotFound, StorageError, Store, files_under, join

SCHEMA = "windows-batch.manifest/1"
CHUNK_SCHEMA = "windows-batch.chunk/1"
ITEM_SCHEMA = "windows-batch.item/1"
RECORD_TAGS = {"windows-batch-retention": "task-result"}
"""The tag of what is only a step on the way (storage.yaml's ExpireTaskResults rule)."""
EXIT_USAGE = 64
"""The manifest or the arguments are wrong: a retry gives the same answer."""
EXIT_DATA = 65
"""The chunk is not what the plan made (digest mismatch): final."""
EXIT_STORAGE = 74
"""Reading or writing the run's objects failed: a retry may pass."""
EXIT_TIMEOUT = 124
"""An item outran its action's timeout (OpenJD onRun.timeout)."""
STOP_GRACE_S = 10.0
"""How long a stopped item may take to exit after SIGTERM before it is killed."""
TOKEN_KINDS = ("path", "file", "in", "cwd")


class RunnerError(Exception):
    """An error with the exit code it maps to."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


def digest(data: Mapping[str, Any]) -> str:
    """Stable digest of a manifest entry (the engine computes the same: study.spec_digest)."""
    blob = json.dumps(data, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()


def log(message: str) -> None:
    print(f"wbrun: {message}", flush=True)


@dataclass
class Paths:
    """Where each token of a step points on this machine, and what to publish after an item."""

    values: dict[str, str] = field(default_factory=dict)
    publish: list[tuple[Path, str, dict[str, tuple[int, int]] | None]] = field(default_factory=list)
    """(local folder or file, out URI, the files it held before: publish only new/changed)."""


class ChunkRunner:
    """Runs one chunk (or the aggregate) of a manifest (see the module docstring)."""

    def __init__(self, *, manifest: str, store: Store | None = None, work: Path | None = None):
        self.manifest = manifest.rstrip("/") + "/"
        self.engine = self.manifest.rsplit("manifest/", 1)[0]
        self.store = store or Store()
        self.work = work or Path(tempfile.mkdtemp(prefix="wbrun-"))
        self._child: subprocess.Popen[bytes] | None = None
        self.header = self._json(join(self.manifest, "header.json"), "the manifest header")
        if self.header.get("schema") != SCHEMA:
            raise RunnerError(f"{self.manifest}: not a {SCHEMA} manifest", EXIT_USAGE)

    def _json(self, uri: str, what: str) -> dict[str, Any]:
        try:
            data = json.loads(self.store.read(uri))
        except NotFound:
            raise RunnerError(f"{what} is missing: {uri}", EXIT_USAGE) from None
        except StorageError as exc:
            raise RunnerError(str(exc), EXIT_STORAGE) from None
        except ValueError as exc:
            raise RunnerError(f"{what} is not JSON: {uri}: {exc}", EXIT_USAGE) from None
        if not isinstance(data, dict):
            raise RunnerError(f"{what} is not a JSON object: {uri}", EXIT_USAGE)
        return data

    # ---- reading the chunk ----------------------------------------------------------------

    def chunk(self, number: int, *, at: tuple[int, int] | None, sha: str | None) -> dict[str, Any]:
        """Chunk `number`'s line of chunks.jsonl: by byte range when given, else by scanning."""
        uri = join(self.manifest, "chunks.jsonl")
        try:
            if at is not None:
                raw = self.store.read(uri, start=at[0], length=at[1])
                lines = [raw]
            else:
                lines = self.store.read(uri).splitlines()
        except StorageError as exc:
            raise RunnerError(str(exc), EXIT_STORAGE) from None
        for line in lines:
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if isinstance(entry, dict) and entry.get("chunk") == number:
                if sha and digest(entry) != sha:
                    raise RunnerError(
                        f"chunk {number} of {uri} is not the one planned (digest mismatch)",
                        EXIT_DATA,
                    )
                return entry
        raise RunnerError(f"chunk {number} is not in {uri}", EXIT_USAGE)

    # ---- running ----------------------------------------------------------------------------

    def run_chunk(self, entry: dict[str, Any], *, name: str, skip_done: bool = True) -> int:
        """Run every item of the chunk; the first failing item's exit code, else 0."""
        step = self.header.get("steps", {}).get(entry.get("step"))
        if not isinstance(step, dict):
            raise RunnerError(f"the manifest has no step {entry.get('step')!r}", EXIT_USAGE)
        work_items = sum(int(i.get("count", 1)) for i in entry.get("items", []))
        marker = join(self.engine, done_record(entry.get("chunk"), work_items))
        chunk_sha = digest(entry)
        if skip_done and self._done(marker, chunk_sha):
            log(f"{name} already done (its record matches): nothing to run")
            return 0
        started = time.time()
        items: list[dict[str, Any]] = []
        paths = self._stage_step(step)
        recorded = self._recorded_items(step, entry.get("items", [])) if skip_done else set()
        code = 0
        error: RunnerError | None = None
        for item in entry.get("items", []):
            try:
                record = self._run_item(step, item, paths, recorded=recorded)
            except RunnerError as exc:  # e.g. an output it may not publish: the item failed
                error = exc
                record = {
                    "index": int(item["index"]),
                    "count": int(item.get("count", 1)),
                    "status": "failed",
                    "exit_code": exc.code,
                    "error": str(exc),
                }
            items.append(record)
            if record["status"] != "done":
                code = int(record["exit_code"])
                break
        status = "done" if code == 0 else "failed"
        if code != 0:
            marker = join(self.engine, failed_record(entry.get("chunk")))
        record_chunk = {
            "schema": CHUNK_SCHEMA,
            "chunk": entry.get("chunk"),
            "step": entry.get("step"),
            "sha": chunk_sha,
            "status": status,
            "exit_code": code,
            "started": started,
            "finished": time.time(),
            "work_items": work_items,
            "done": sum(int(i["count"]) for i in items if i["status"] == "done"),
            "failed": sum(int(i["count"]) for i in items if i["status"] != "done"),
            "items": items,
        }
        try:
            self._write_json(marker, record_chunk)
        except RunnerError:
            if error is None:
                raise
        log(f"{name} {status} in {time.time() - started:.1f} s")
        if error is not None:  # recorded first, so that its items count failed, not pending
            raise error
        return code

    def _done(self, marker: str, sha: str, *, listed: bool = False) -> bool:
        """Whether `marker` is a done record of this digest (listed: it is known to exist)."""
        try:
            if not listed and not self.store.exists(marker):
                return False
            data = json.loads(self.store.read(marker))
        except (StorageError, ValueError):
            return False
        return isinstance(data, dict) and data.get("sha") == sha and data.get("status") == "done"

    def _item_record(self, step: dict[str, Any], index: int) -> str:
        return join(self.engine, f"items/{step['task_id']}-{index:07d}.json")

    def _recorded_items(self, step: dict[str, Any], items: Sequence[Mapping[str, Any]]) -> set[str]:
        """The item records of this chunk that exist, from one listing of the longest key
        prefix its items share (a chunk's items are consecutive): a first try of a 500-item
        chunk asks S3 once, not 500 times, whether an item is already done."""
        if not items:
            return set()
        first = self._item_record(step, min(int(i["index"]) for i in items))
        last = self._item_record(step, max(int(i["index"]) for i in items))
        # Characters, not path parts: the records' names share a prefix of digits.
        shared = next(
            (first[:n] for n, (a, b) in enumerate(zip(first, last, strict=False)) if a != b), first
        )
        try:
            return self.store.keys_starting(shared)
        except StorageError as exc:
            raise RunnerError(f"cannot list the item records: {exc}", EXIT_STORAGE) from None

    def _run_item(
        self, step: dict[str, Any], item: dict[str, Any], paths: Paths, *, recorded: set[str]
    ) -> dict[str, Any]:
        index = int(item["index"])
        count = int(item.get("count", 1))
        item_sha = digest(item)
        marker = self._item_record(step, index)
        if marker in recorded and self._done(marker, item_sha, listed=True):
            log(f"item {index} already done: skipped")
            return {
                "index": index,
                "count": count,
                "status": "done",
                "exit_code": 0,
                "elapsed_s": 0.0,
                "skipped": True,
            }
        out_root = self.work / "out" / str(index)
        item_paths = self._item_paths(step, item, paths, out_root)
        argv = [self._local_uri(resolve(a, item_paths.values)) for a in item.get("argv", [])]
        if not argv:
            raise RunnerError(f"item {index} has no command", EXIT_USAGE)
        for embedded in step.get("files", []) + item.get("files", []):
            self._write_file(embedded, item_paths.values)
        env = {**os.environ, **{str(k): str(v) for k, v in step.get("env", {}).items()}}
        env.update(
            {
                "WB_RUN_ID": str(self.header.get("run_id", "")),
                "WB_ITEM_INDEX": str(index),
                "WB_WORK_DIR": str(self.work),
            }
        )
        timeout = float(step.get("env", {}).get("WB_ACTION_TIMEOUT_S", 0) or 0) or None
        log(
            f"item {index}{' (' + item['label'] + ')' if item.get('label') else ''}: "
            f"{' '.join(argv)}"
        )
        started = time.time()
        code = self._execute(argv, env=env, timeout=timeout)
        elapsed = time.time() - started
        if code != 0:
            log(f"item {index} exited with {code} after {elapsed:.1f} s: nothing published")
            shutil.rmtree(out_root, ignore_errors=True)
            return {
                "index": index,
                "count": count,
                "status": "failed",
                "exit_code": code,
                "elapsed_s": round(elapsed, 3),
            }
        outputs = self._publish(item_paths.publish)
        self._write_json(
            marker,
            {
                "schema": ITEM_SCHEMA,
                "index": index,
                "sha": item_sha,
                "status": "done",
                "elapsed_s": round(elapsed, 3),
                "outputs": outputs,
                "count": count,
            },
            tags=RECORD_TAGS,
        )
        shutil.rmtree(out_root, ignore_errors=True)
        log(f"item {index} done in {elapsed:.1f} s, {len(outputs)} output file(s) published")
        return {
            "index": index,
            "count": count,
            "status": "done",
            "exit_code": 0,
            "elapsed_s": round(elapsed, 3),
            "outputs": len(outputs),
        }

    def _local_uri(self, arg: str) -> str:
        """Locally, an `s3://` argument (or `--name=s3://...`) names the local bucket's file."""
        if self.store.local_root is None or "s3://" not in arg:
            return arg
        head, sep, uri = (
            arg.partition("=s3://") if not arg.startswith("s3://") else ("", "", arg[5:])
        )
        if not arg.startswith("s3://") and not sep:
            return arg
        path = self.store.local_path("s3://" + uri)
        text = str(path) + ("/" if uri.endswith("/") else "")
        return f"{head}={text}" if sep else text

    def _execute(
        self, argv: Sequence[str], *, env: Mapping[str, str], timeout: float | None
    ) -> int:
        posix = os.name == "posix"
        try:
            self._child = subprocess.Popen(
                list(argv), cwd=self.work, env=dict(env), start_new_session=posix
            )
        except FileNotFoundError:
            log(f"cannot run {argv[0]!r}: not found on this machine")
            return 127
        except OSError as exc:
            log(f"cannot run {argv[0]!r}: {exc}")
            return 126
        try:
            return self._child.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            log(f"the command outran its timeout of {timeout:g} s: stopped")
            self.stop_child()
            self._child.wait()  # reaped here: stop_child only waits for it to exit
            return EXIT_TIMEOUT
        finally:
            self._child = None

    def stop_child(self) -> None:
        """Stop the running command (and, on POSIX, its whole process group): SIGTERM, then
        SIGKILL if it has not exited within STOP_GRACE_S."""
        child = self._child
        if child is None or child.poll() is not None:
            return
        if os.name != "posix":
            child.terminate()
            try:
                child.wait(timeout=STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                child.kill()
            return
        try:
            os.killpg(child.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        if not exits_within(child.pid, STOP_GRACE_S):
            with suppress(ProcessLookupError):
                os.killpg(child.pid, signal.SIGKILL)

    # ---- staging ----------------------------------------------------------------------------

    def _stage_step(self, step: dict[str, Any]) -> Paths:
        """Files and PATHs every item of the step shares; downloaded once per chunk."""
        paths = Paths(values={"cwd:": str(self.work)})
        bundle_root = self._bundle(step)
        for spec in step.get("paths", []):
            name, flow = spec["name"], spec["flow"]
            key = f"path:{name}"
            if flow == "OUT":
                if step.get("sees_outputs"):
                    local = self.work / "outputs" / name
                    before = self._fill(spec["out_uri"], local)
                    paths.values[key] = str(local)
                    paths.publish.append((local, spec["out_uri"], before))
                continue  # per item otherwise
            if spec.get("bundle"):
                if bundle_root is None:
                    raise RunnerError(f"{name}: the step's bundle was not staged", EXIT_USAGE)
                source = bundle_root / spec["bundle"]
            else:
                source = self._fetch_input(spec, self.work / "inputs" / name)
            if flow == "INOUT":
                local = self.work / "inout" / name
                if source.is_dir():
                    shutil.copytree(source, local, dirs_exist_ok=True)
                else:
                    local.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(source, local / source.name)
                    local = local / source.name
                paths.values[key] = str(local)
                paths.publish.append((local, spec["out_uri"], snapshot(local)))
            else:
                paths.values[key] = str(source)
        return paths

    def _bundle(self, step: dict[str, Any]) -> Path | None:
        if not step.get("bundle"):
            return None
        uri = str(step.get("bundle_uri", ""))
        local = self.store.local_path(uri) if uri else None
        if local is not None and local.is_dir():
            return local
        target = self.work / "bundle"
        try:
            self.store.download_tree(uri, target)
        except StorageError as exc:
            raise RunnerError(f"cannot stage the study's bundle: {exc}", EXIT_STORAGE) from None
        return target

    def _fetch_input(self, spec: Mapping[str, Any], target: Path) -> Path:
        uri = str(spec["uri"])
        local = self.store.local_path(uri)
        try:
            if local is not None:
                if not local.exists():
                    raise RunnerError(f"input {spec['name']}: {uri} does not exist", EXIT_USAGE)
                return local
            if spec.get("kind") == "FILE":
                path = target / uri.rsplit("/", 1)[-1]
                self.store.download(uri, path)
                return path
            self.store.download_tree(uri, target)
            return target
        except NotFound:
            raise RunnerError(f"input {spec['name']}: {uri} does not exist", EXIT_USAGE) from None
        except StorageError as exc:
            raise RunnerError(f"input {spec['name']}: {exc}", EXIT_STORAGE) from None

    def _fill(self, uri: str, local: Path) -> dict[str, tuple[int, int]]:
        try:
            self.store.download_tree(uri, local)
        except StorageError as exc:
            raise RunnerError(f"cannot stage the outputs of {uri}: {exc}", EXIT_STORAGE) from None
        return snapshot(local)

    def _item_paths(
        self, step: dict[str, Any], item: dict[str, Any], shared: Paths, out_root: Path
    ) -> Paths:
        paths = Paths(values=dict(shared.values), publish=list(shared.publish))
        if not step.get("sees_outputs"):
            for spec in step.get("paths", []):
                if spec["flow"] != "OUT":
                    continue
                folder = out_root / spec["name"]
                shutil.rmtree(folder, ignore_errors=True)
                folder.mkdir(parents=True)
                local = folder / spec["filename"] if spec.get("kind") == "FILE" else folder
                paths.values[f"path:{spec['name']}"] = str(local)
                paths.publish.append((folder, spec["out_uri"], None))
        for staged in item.get("inputs", []):
            target = self.work / "items" / str(item["index"]) / staged["name"]
            path = self._fetch_input(
                {"name": staged["name"], "uri": staged["uri"], "kind": "FILE"}, target
            )
            paths.values[f"in:{staged['name']}"] = str(path)
        # Embedded files resolve against the paths, and every path can name an embedded file.
        for embedded in step.get("files", []) + item.get("files", []):
            paths.values[f"file:{embedded['name']}"] = str(self._file_path(embedded))
        return paths

    def _file_path(self, embedded: Mapping[str, Any]) -> Path:
        return self.work / "files" / (embedded.get("filename") or embedded["name"])

    def _write_file(self, embedded: Mapping[str, Any], values: Mapping[str, str]) -> None:
        path = self._file_path(embedded)
        path.parent.mkdir(parents=True, exist_ok=True)
        full = {**values, f"file:{embedded['name']}": str(path)}
        path.write_text(resolve(str(embedded.get("data", "")), full), encoding="utf-8")
        if embedded.get("runnable") and os.name == "posix":
            path.chmod(0o755)

    def _publish(
        self, targets: Sequence[tuple[Path, str, dict[str, tuple[int, int]] | None]]
    ) -> list[str]:
        published = []
        for local, uri, before in targets:
            base = local if local.is_dir() else local.parent
            for path in files_under(local):
                relative = path.relative_to(base).as_posix()
                if before is not None and before.get(relative) == _state(path):
                    continue  # staged in unchanged: not this task's output
                target = join(uri, relative)
                try:
                    self.store.upload(path, target)
                except StorageError as exc:
                    raise RunnerError(f"cannot publish {relative}: {exc}", EXIT_STORAGE) from None
                published.append(target)
        return published

    def _write_json(
        self, uri: str, data: Mapping[str, Any], *, tags: Mapping[str, str] | None = None
    ) -> None:
        try:
            self.store.write(
                uri, json.dumps(data).encode(), content_type="application/json", tags=tags
            )
        except StorageError as exc:
            raise RunnerError(f"cannot record progress: {exc}", EXIT_STORAGE) from None


def exits_within(pid: int, timeout_s: float) -> bool:
    """True once child `pid` has exited, within `timeout_s`; it is left for its Popen to reap.

    stop_child runs in the SIGTERM handler too, which may have interrupted Popen.wait: that wait
    holds the lock Popen's other waits and polls need, so they would sleep out the whole grace.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None:
                return True
        except ChildProcessError:  # already reaped
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)


def done_record(chunk: object, work_items: int) -> str:
    """The key (under the engine prefix) of a finished chunk's record."""
    if chunk == "aggregate":
        return "chunks/done/aggregate.json"
    return f"chunks/done/{int(str(chunk)):05d}-{work_items}.json"


def failed_record(chunk: object) -> str:
    if chunk == "aggregate":
        return "chunks/failed/aggregate.json"
    return f"chunks/failed/{int(str(chunk)):05d}.json"


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """(size, mtime) of each file under `root`, by relative name: what was there before."""
    base = root if root.is_dir() else root.parent
    return {p.relative_to(base).as_posix(): _state(p) for p in files_under(root)}


def _state(path: Path) -> tuple[int, int]:
    stat = path.stat()
    return stat.st_size, stat.st_mtime_ns


def resolve(text: str, values: Mapping[str, str]) -> str:
    """Replace `@@wb:<kind>:<name>@@` tokens with this machine's paths."""
    if "@@wb:" not in text:
        return text
    out = []
    rest = text
    while "@@wb:" in rest:
        before, _, tail = rest.partition("@@wb:")
        body, sep, after = tail.partition("@@")
        if not sep:
            out.append(before + "@@wb:" + tail)
            rest = ""
            break
        if body not in values:
            raise RunnerError(f"no local path for @@wb:{body}@@", EXIT_USAGE)
        out.append(before + values[body])
        rest = after
    out.append(rest)
    return "".join(out)


def install_signal_handlers(runner: ChunkRunner) -> None:
    """ECS StopTask sends SIGTERM: stop the command too, so nothing outlives the task."""

    def stop(signum: int, frame: Any) -> None:
        log(f"signal {signum}: stopping")
        runner.stop_child()
        sys.exit(128 + signum)

    for name in ("SIGTERM", "SIGINT"):
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), stop)
