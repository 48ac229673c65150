"""The `code` step: JavaScript in a V8 isolate (mini-racer), run in a sandbox process of its own.

The source is the body of an async function with `ctx` in scope (the run's context: trigger, steps,
vars, and item/index/error where the step has them); what it returns, awaited, is the step's
output, and it must be JSON. Each execution gets a fresh V8 context, so nothing leaks between
runs or tenants. The isolate has no network, filesystem, modules or timers: bare V8 has no
require, fetch, process or module loader, and mini-racer's setTimeout, Atomics and
SharedArrayBuffer are removed. WebAssembly is removed too: a snippet of text has no use for it,
and its memory lives outside the heap limit. eval and Function stay: they compile JavaScript into
the same isolate, under the same limits, and reach nothing the code itself cannot.

Why a separate process: probing mini-racer 0.14 (V8 14.4) showed its own limits do not always
hold. `new Array(2**27).fill(1.5)` runs on past both the time limit and the hard memory limit
(builtins do not stop for them) until V8 aborts the whole process; `new Uint8Array(2**30).fill(1)`
takes a gigabyte outside the heap without any error; a chain of promises that never ends keeps
the isolate busy after the evaluation returns. So the host process never runs JavaScript: a
sandbox process does, the host kills it at the time limit (plus a grace) or when it grows past
the memory limit, and starts another. Sandboxes are kept warm in a small pool (the next context
is prepared while the process is idle) and never share a context.
"""

from __future__ import annotations

import contextvars
import json
import os
import re
import select
import signal
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from nectar.core.workflows.expressions import MAX_VALUE_DEPTH, MAX_VALUE_SIZE, json_bytes

MAX_SOURCE_CHARS = 20_000
SYNC_TIME_LIMIT_SECONDS = 2.0  # endpoint calls
ASYNC_TIME_LIMIT_SECONDS = 10.0  # background runs
MAX_MEMORY_MB = 64
MAX_INPUT_BYTES = 8 * 2**20  # the context as JSON; parsed, it takes several times that of the heap

# The host's own bounds around a sandbox. The process may grow by the code's heap limit plus this
# much (V8's code, a new context, the input copied in) before it is killed.
_PROCESS_HEADROOM_BYTES = 64 * 2**20
# V8 aborts the sandbox at this heap size whatever happens, should the host's watch come too late.
_HEAP_CEILING_MB = 256
_GRACE_SECONDS = 1.0  # the sandbox's answer after its own time limit, on a busy machine
_START_TIMEOUT_SECONDS = 20.0
_READY_TIMEOUT_SECONDS = 2.0  # an idle sandbox not ready by then is replaced
_WATCH_INTERVAL_SECONDS = 0.025
_MAX_SANDBOXES = 4  # per host process: each may hold about 64 + 130 MB
# One tenant's code may keep at most this many of them busy, so a tenant whose code spins cannot
# hold every sandbox of a web process or worker while others wait (a fair share, as for threads).
MAX_SANDBOXES_PER_TENANT = 2
_MAX_IDLE = 2
_JOBS_PER_SANDBOX = 200  # then a fresh process, so nothing can build up in a long-lived one
_CHECK_SECONDS = 2.0  # parsing 20,000 characters takes milliseconds
_USER_LINE_OFFSET = 1  # the wrapper's first line comes before the user's source
_SCRIPT_NAME = "code.js"


class CodeError(Exception):
    """The code failed: threw, returned something that is not JSON, or could not run. The message
    says what and, for errors raised in the code, where (line and column in its source)."""


class CodeTimeout(CodeError):
    """The code ran past its time limit and was stopped."""


class CodeMemoryExceeded(CodeError):
    """The code used more memory than its limit and was stopped."""


_tenant: contextvars.ContextVar[str | None] = contextvars.ContextVar("code_sandbox_tenant", default=None)


@contextmanager
def tenant_share(tenant: object | None) -> Iterator[None]:
    """Code run or checked inside (and in threads started with a copy of this context) counts
    against `tenant`'s share of the sandboxes: at most MAX_SANDBOXES_PER_TENANT at once. None: no
    share (the platform's own code, tests)."""
    token = _tenant.set(None if tenant is None else str(tenant))
    try:
        yield
    finally:
        _tenant.reset(token)


def run_code(source: str, context: dict, *, timeout_seconds: float, memory_mb: int = MAX_MEMORY_MB) -> Any:
    """Runs `source` with `context` as `ctx` in a fresh V8 context of a sandbox process; returns its
    output (JSON) or raises CodeError. The code has `timeout_seconds` once a sandbox is free; waiting
    for one (all busy, or a cold start) is bounded on its own and counted by the caller's clock."""
    context_json = json_bytes(context)
    if len(context_json) > MAX_INPUT_BYTES:
        raise CodeError(
            f"the run's context is {len(context_json) / 2**20:.1f} MB as JSON, more than the "
            f"{MAX_INPUT_BYTES // 2**20} MB a code step is given"
        )
    request = {"op": "run", "source": source, "timeout": timeout_seconds, "memory_mb": memory_mb}
    reply = _pool().exchange(request, context_json, timeout_seconds, memory_mb)
    if "value" in reply:
        return reply["value"]
    raise _failure(reply, source, timeout_seconds, memory_mb)


def syntax_error(source: str) -> str | None:
    """The first syntax error in `source` as "SyntaxError: ... (line L, column C)", or None when it
    parses. Nothing of the code runs."""
    try:
        reply = _pool().exchange({"op": "check", "source": source}, b"null", _CHECK_SECONDS, MAX_MEMORY_MB)
    except CodeError as error:
        return f"the code could not be checked now ({error}); try again"
    if reply.get("ok"):
        return None
    if "syntax" not in reply:  # stopped or failed: a fault of the sandbox, not of the source
        return "the code could not be checked now; try again"
    return str(_failure(reply, source, _CHECK_SECONDS, MAX_MEMORY_MB))


def _failure(reply: dict, source: str, timeout: float, memory_mb: int) -> CodeError:
    stopped = reply.get("stopped")
    if stopped == "time":
        return CodeTimeout(f"the code ran longer than its time limit of {timeout:g} s and was stopped")
    if stopped == "memory":
        return CodeMemoryExceeded(
            f"the code used more than its memory limit of {memory_mb} MB and was stopped"
        )
    problem = reply.get("syntax") or reply.get("error")
    if isinstance(problem, dict) and "thrown" in problem:
        return CodeError(f"the code threw {problem['thrown']} (not an Error, so it has no line and column)")
    if isinstance(problem, dict) and "message" in problem:
        message = f"{problem['name']}: {problem['message']}" if "name" in problem else str(problem["message"])
        return CodeError(_located(message, problem.get("line"), problem.get("column"), source))
    if "invalid" in reply:
        return CodeError(f"the output must be JSON: {reply['invalid']}")
    if reply.get("pending"):
        return CodeError(
            "the code's promise never settled: it can wait for nothing (no timers, network or events), "
            "so return a value"
        )
    return CodeError(f"the code failed: {reply.get('failed', 'its sandbox gave no answer')}")


def _located(message: str, line: object, column: object, source: str) -> str:
    if not isinstance(line, int) or not isinstance(column, int):
        return message
    line -= _USER_LINE_OFFSET
    if line > source.count("\n") + 1:  # found in the wrapper's closing line: the code stopped short
        if message.startswith("SyntaxError"):
            return "SyntaxError: the code ends too early (is a bracket, string or comment left open?)"
        return f"{message} (at the end of the code)"
    if line < 1:
        return message
    return f"{message} (line {line}, column {column})"


# ---------------------------------------------------------------------------------------------
# Host side: the pool of sandbox processes.


class _Stopped(Exception):
    """The sandbox was killed (time or memory) or died; it is gone."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class _Sandbox:
    """One sandbox process. Each message either way is two frames (4-byte length, then bytes): a
    JSON header and a body (the context going in, the code's result coming out)."""

    def __init__(self):
        boot = "from nectar.core.workflows.code import serve_sandbox; serve_sandbox()"
        path = os.pathsep.join(entry for entry in sys.path if entry)
        # Only what Python needs to find our code and mini-racer: none of the host's secrets.
        env = {"PYTHONPATH": path, "PYTHONDONTWRITEBYTECODE": "1", "PYTHONNOUSERSITE": "1"}
        self.process = subprocess.Popen(
            [sys.executable, "-c", boot],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=env,
            close_fds=True,
        )
        self.jobs = 0
        self.ready = False  # its fresh context is prepared and it waits for a request
        self._buffer = b""

    def await_ready(self, timeout: float) -> bool:
        if not self.ready:
            try:
                header, _ = self._read_message(time.monotonic() + timeout, None)
            except _Stopped:
                return False
            self.ready = header == {"ready": True}
        return self.ready

    def exchange(self, message: bytes, timeout: float, memory_cap_bytes: int) -> tuple[dict, bytes]:
        self.jobs += 1
        self.ready = False
        rss_cap = self._rss() + memory_cap_bytes
        try:
            self.process.stdin.write(message)
            self.process.stdin.flush()
        except OSError:
            self.discard()
            raise _Stopped("died") from None
        return self._read_message(time.monotonic() + timeout + _GRACE_SECONDS, rss_cap)

    def _read_message(self, deadline: float, rss_cap: int | None) -> tuple[dict, bytes]:
        try:
            header = json.loads(self._read_frame(deadline, rss_cap))
        except ValueError:
            self.discard()
            raise _Stopped("died") from None
        return header, self._read_frame(deadline, rss_cap)

    def _read_frame(self, deadline: float, rss_cap: int | None) -> bytes:
        stdout = self.process.stdout.fileno()
        poller = select.poll()  # not select(): a busy web process may hold descriptors past 1024
        poller.register(stdout, select.POLLIN)
        while True:
            if len(self._buffer) >= 4:
                (size,) = struct.unpack(">I", self._buffer[:4])
                if len(self._buffer) >= 4 + size:
                    frame, self._buffer = self._buffer[4 : 4 + size], self._buffer[4 + size :]
                    return frame
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self.discard()
                raise _Stopped("time")
            if rss_cap is not None and self._rss() > rss_cap:
                self.discard()
                raise _Stopped("memory")
            if poller.poll(min(remaining, _WATCH_INTERVAL_SECONDS) * 1000):
                data = os.read(stdout, 1 << 20)
                if not data:
                    self.discard()
                    raise _Stopped("died")
                self._buffer += data

    def _rss(self) -> int:
        try:
            with open(f"/proc/{self.process.pid}/statm", "rb") as statm:
                return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, IndexError, ValueError):
            return 0

    def discard(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
        self.process.wait()
        for pipe in (self.process.stdin, self.process.stdout):
            try:
                pipe.close()
            except OSError:
                pass


def _message(header: dict, body: bytes) -> bytes:
    head = json.dumps(header).encode()
    return struct.pack(">I", len(head)) + head + struct.pack(">I", len(body)) + body


class _Pool:
    """At most _MAX_SANDBOXES sandboxes busy per process, MAX_SANDBOXES_PER_TENANT of them for one
    tenant; up to _MAX_IDLE kept warm between calls."""

    def __init__(self):
        self.idle: list[_Sandbox] = []
        self.lock = threading.Lock()
        self.slots = threading.BoundedSemaphore(_MAX_SANDBOXES)
        self.busy: dict[str, int] = {}  # sandboxes in use by each tenant
        self.tenant_freed = threading.Condition(threading.Lock())

    def exchange(self, request: dict, context_json: bytes, timeout: float, memory_mb: int) -> dict:
        """The sandbox's answer: the code's result (value, error, invalid, pending), `ok` for a
        check, `syntax`, `stopped` (time or memory) or `failed`."""
        message = _message(request, context_json)
        with self._tenant_slot(_tenant.get(), max(timeout, 0.1)):
            return self._exchange(message, timeout, memory_mb)

    @contextmanager
    def _tenant_slot(self, tenant: str | None, timeout: float) -> Iterator[None]:
        if tenant is not None:
            with self.tenant_freed:
                if not self.tenant_freed.wait_for(
                    lambda: self.busy.get(tenant, 0) < MAX_SANDBOXES_PER_TENANT, timeout
                ):
                    raise CodeError(
                        f"this organization's code already kept its {MAX_SANDBOXES_PER_TENANT} sandboxes "
                        f"of this process busy for {timeout:g} s"
                    )
                self.busy[tenant] = self.busy.get(tenant, 0) + 1
        try:
            yield
        finally:
            if tenant is not None:
                with self.tenant_freed:
                    self.busy[tenant] -= 1
                    if not self.busy[tenant]:
                        del self.busy[tenant]
                    self.tenant_freed.notify_all()

    def _exchange(self, message: bytes, timeout: float, memory_mb: int) -> dict:
        if not self.slots.acquire(timeout=max(timeout, 0.1)):
            raise CodeError(f"every code sandbox of this process stayed busy for {timeout:g} s")
        try:
            sandbox = self._take()
            try:
                header, body = sandbox.exchange(message, timeout, memory_mb * 2**20 + _PROCESS_HEADROOM_BYTES)
            except _Stopped as stopped:
                self._replace()
                if stopped.reason == "died":
                    return {"failed": "its sandbox process stopped (it may have run out of memory)"}
                return {"stopped": stopped.reason}
            if header.get("reusable") and sandbox.jobs < _JOBS_PER_SANDBOX:
                self._give_back(sandbox)
            else:
                sandbox.discard()
                self._replace()
        finally:
            self.slots.release()
        if header.get("result"):
            try:
                result = json.loads(body)
            except ValueError:
                result = None
            return result if isinstance(result, dict) else {"failed": "its result could not be read"}
        return header

    def _take(self) -> _Sandbox:
        while True:
            with self.lock:
                sandbox = self.idle.pop() if self.idle else None
            if sandbox is None:
                try:
                    sandbox = _Sandbox()
                except OSError as error:  # out of processes or memory: this step fails, not the run's host
                    raise CodeError(f"the code sandbox could not start: {error}") from None
                if sandbox.await_ready(_START_TIMEOUT_SECONDS):
                    return sandbox
                sandbox.discard()
                raise CodeError("the code sandbox could not start")
            if sandbox.await_ready(_READY_TIMEOUT_SECONDS):
                return sandbox
            sandbox.discard()

    def _replace(self) -> None:
        """Starts a sandbox for the idle pool in the background, so the next call finds one warm."""

        def start() -> None:
            with self.lock:
                if len(self.idle) >= _MAX_IDLE:
                    return
            try:
                sandbox = _Sandbox()
            except OSError:
                return  # the next call starts one itself, and says so if it cannot
            if sandbox.await_ready(_START_TIMEOUT_SECONDS):
                self._give_back(sandbox)
            else:
                sandbox.discard()

        threading.Thread(target=start, name="code-sandbox-start", daemon=True).start()

    def _give_back(self, sandbox: _Sandbox) -> None:
        with self.lock:
            if len(self.idle) < _MAX_IDLE:
                self.idle.append(sandbox)
                return
        sandbox.discard()


_pools: dict[int, _Pool] = {}
_pools_lock = threading.Lock()


def _pool() -> _Pool:
    # Per process id: a forked child (a gunicorn worker) never talks to its parent's sandboxes.
    with _pools_lock:
        pool = _pools.get(os.getpid())
        if pool is None:
            _pools.clear()
            pool = _pools[os.getpid()] = _Pool()
        return pool


# ---------------------------------------------------------------------------------------------
# Sandbox side: the process that runs JavaScript.

# Run once in every fresh context, before any code. It takes away what the isolate must not have,
# and keeps its own references to the builtins it uses, so code that replaces them changes nothing.
_PRELUDE = r"""
(() => {
  "use strict";
  const global = globalThis;
  // mini-racer declares these with var, which cannot be deleted: they are emptied instead.
  global.setTimeout = undefined;
  global.clearTimeout = undefined;
  global.__timer_manager = undefined;
  delete global.Atomics;
  delete global.SharedArrayBuffer;
  delete global.WebAssembly;

  const MAX_SIZE = %(max_size)d, MAX_DEPTH = %(max_depth)d;
  const { stringify, parse } = JSON;
  const { isArray } = Array;
  const { getPrototypeOf, keys, create, freeze, defineProperty } = Object;
  const apply = Reflect.apply, then = Promise.prototype.then, exec = RegExp.prototype.exec;
  const objectPrototype = Object.prototype, arrayPrototype = Array.prototype;
  const isFinite = Number.isFinite, text = String, DateType = Date;
  const FRAME = /\n\s+at (?:[^\n]*\()?code\.js:(\d+):(\d+)/;
  const IDENTIFIER = /^[A-Za-z_$][A-Za-z0-9_$]*$/;
  let input = null, outcome = null;

  // Shown whole or not at all: the engine masks the run's secrets, then cuts what it records
  // (engine.masked_and_cut); cut here first, a secret spanning the cut would escape its mask.
  function whole(shown) {
    return shown.length > MAX_SIZE ? `(${shown.length} characters, more than ${MAX_SIZE} characters: not shown)` : shown;
  }

  function describeError(error) {
    try {
      if (error !== null && typeof error === "object" && typeof error.stack === "string") {
        const frame = apply(exec, FRAME, [error.stack]);
        return {
          name: whole(text(error.name)), message: whole(text(error.message)),
          line: frame ? +frame[1] : null, column: frame ? +frame[2] : null,
        };
      }
      let shown = typeof error === "object" && error !== null ? stringify(error) : undefined;
      if (typeof shown !== "string") shown = typeof error === "string" ? stringify(error) : text(error);
      return { thrown: whole(shown) };
    } catch (_) {
      return { thrown: "a value that cannot be shown" };
    }
  }

  // Where a value sits in the output, as text: only built for the message of a problem.
  function pathText(place) {
    let shown = "";
    for (; place.up !== null; place = place.up) {
      const key = place.key;
      shown = (typeof key === "number" ? `[${key}]` : apply(exec, IDENTIFIER, [key]) ? `.${key}` : `[${stringify(key)}]`) + shown;
    }
    return "output" + shown;
  }

  // A copy of `root` made only of JSON values, or the first thing in it that is not one.
  function jsonCopy(root) {
    let budget = MAX_SIZE;
    const ancestors = [];
    const tooLarge = { problem: `the output is larger than ${MAX_SIZE} characters` };
    function visit(value, place, depth) {
      switch (typeof value) {
        case "string":
          budget -= value.length + 2;
          return budget < 0 ? tooLarge : { value };
        case "boolean":
          budget -= 5;
          return { value };
        case "number":
          if (!isFinite(value)) return { problem: `${pathText(place)} is ${value}, which JSON cannot hold` };
          budget -= 8;
          return { value };
        case "undefined":
          return { problem: `${pathText(place)} is undefined (use null for "no value")` };
        case "function":
          return { problem: `${pathText(place)} is a function` };
        case "symbol":
          return { problem: `${pathText(place)} is a symbol` };
        case "bigint":
          return { problem: `${pathText(place)} is a BigInt (convert it with Number() or String())` };
      }
      if (value === null) {
        budget -= 4;
        return { value };
      }
      if (depth >= MAX_DEPTH) return { problem: `${pathText(place)} nests deeper than ${MAX_DEPTH} levels` };
      for (let level = 0; level < depth; level++) {
        if (ancestors[level].value === value) {
          return { problem: `${pathText(place)} refers back to ${pathText(ancestors[level])} (a cycle)` };
        }
      }
      const prototype = getPrototypeOf(value), array = isArray(value);
      if (array ? prototype !== arrayPrototype : prototype !== objectPrototype && prototype !== null) {
        const hint = value instanceof DateType ? " (convert it with .toISOString())" : "";
        const name = prototype && typeof prototype.constructor === "function" ? prototype.constructor.name : "";
        const kind = name ? "a " + name : "an object";
        return { problem: `${pathText(place)} is ${kind}, not a plain object or array${hint}` };
      }
      place.value = value;
      ancestors[depth] = place;
      let copy;
      if (array) {
        const length = value.length;
        budget -= 2 + length;
        if (budget < 0) return tooLarge;
        copy = [];
        for (let index = 0; index < length; index++) {
          const item = visit(value[index], { up: place, key: index, value: null }, depth + 1);
          if (item.problem) return item;
          copy[index] = item.value;
        }
      } else {
        copy = create(null);
        const names = keys(value);
        for (let index = 0; index < names.length; index++) {
          const key = names[index];
          budget -= key.length + 4;
          if (budget < 0) return tooLarge;
          const item = visit(value[key], { up: place, key, value: null }, depth + 1);
          if (item.problem) return item;
          copy[key] = item.value;
        }
      }
      return { value: copy };
    }
    return visit(root, { up: null, key: null, value: root }, 0);
  }

  // The answer to the host, as JSON text; its own object, so a toJSON put on Object.prototype
  // by the code cannot change it.
  function answer(key, value) {
    const reply = create(null);
    reply[key] = value;
    return stringify(reply);
  }

  const sandbox = freeze({
    give(json) {
      input = json;
    },
    start(main) {
      const ctx = parse(input);
      input = null;
      apply(then, main(ctx), [
        (value) => { outcome = { ok: true, value }; },
        (error) => { outcome = { ok: false, error }; },
      ]);
    },
    finish() {
      if (outcome === null) return answer("pending", true);
      if (!outcome.ok) return answer("error", describeError(outcome.error));
      if (outcome.value === undefined) {
        return answer("invalid", "the code returned nothing; end it with `return` and a JSON value");
      }
      const checked = jsonCopy(outcome.value);
      return checked.problem ? answer("invalid", checked.problem) : answer("value", checked.value);
    },
  });
  defineProperty(global, "__nectar_sandbox", { value: sandbox });
})();
""" % {
    "max_size": MAX_VALUE_SIZE,
    "max_depth": MAX_VALUE_DEPTH,
}

_PARSE_ERROR = re.compile(r"\A[^\n]*?:(?P<line>\d+): (?P<message>[^\n]*)\n[^\n]*\n(?P<pad> *)\^")


def _wrapped(source: str, call: bool) -> str:
    # The user's source starts a line of its own, so only line numbers shift (_USER_LINE_OFFSET).
    head = "__nectar_sandbox.start(async function (ctx) {\n" if call else "(async function (ctx) {\n"
    return head + source + "\n}" + (")" if call else ")") + "\n//# sourceURL=" + _SCRIPT_NAME


def serve_sandbox() -> None:
    """The sandbox process: prepares a fresh context, says it is ready, runs one request in it,
    answers, and again, until its input closes. After a time or memory stop it exits: its isolate
    may still be busy."""
    import resource

    from py_mini_racer import MiniRacer, init_mini_racer

    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # an aborted V8 must not write gigabytes
    init_mini_racer(flags=["--single-threaded", f"--max-old-space-size={_HEAP_CEILING_MB}"])
    replies = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # whatever V8 prints goes to stderr, never into the replies
    requests = os.fdopen(0, "rb")
    while True:
        racer = MiniRacer()
        racer.eval(_PRELUDE)
        replies.write(_message({"ready": True}, b"null"))
        replies.flush()
        request = _receive(requests)
        if request is None:
            return
        header, body = _handle(racer, json.loads(request[0]), request[1].decode())
        replies.write(_message(header, body))
        replies.flush()
        if not header.get("reusable"):
            os._exit(0)
        racer.close()


def _handle(racer, request: dict, context_json: str) -> tuple[dict, bytes]:
    from py_mini_racer import JSOOMException, JSParseException, JSTimeoutException

    deadline = time.monotonic() + (float(request["timeout"]) if request["op"] == "run" else _CHECK_SECONDS)

    def left() -> float:
        return max(0.01, deadline - time.monotonic())

    try:
        racer.set_hard_memory_limit(int(request.get("memory_mb", MAX_MEMORY_MB)) * 2**20)
        if request["op"] == "check":
            return _check(racer, request["source"], left), b"null"
        racer.eval(f"__nectar_sandbox.give({json.dumps(context_json)})", timeout_sec=left())
        racer.eval(_wrapped(request["source"], call=True), timeout_sec=left())
        # Promises settle between evaluations, so finishing is one more, within what time is left.
        result = racer.eval("__nectar_sandbox.finish()", timeout_sec=left())
    except JSTimeoutException:
        return {"stopped": "time"}, b"null"
    except JSOOMException:
        return {"stopped": "memory"}, b"null"
    except JSParseException as error:
        return {"syntax": _parse_error(str(error)), "reusable": True}, b"null"
    except Exception as error:  # noqa: BLE001 - anything else the isolate did: report it, then retire
        first_line = str(error).split("\n", 1)[0]  # shown whole or not at all, as whole() in the isolate
        if len(first_line) > MAX_VALUE_SIZE:
            first_line = f"({len(first_line)} characters, more than {MAX_VALUE_SIZE} characters: not shown)"
        return {"failed": first_line}, b"null"
    if not isinstance(result, str):
        return {"failed": "its result could not be read"}, b"null"
    return {"result": True, "reusable": True}, result.encode(errors="surrogatepass")


def _check(racer, source: str, left) -> dict:
    """The check op's answer, running none of `source`: the wrapped script throws before anything
    (a syntax error anywhere is still found first, with its place), and the source is then compiled
    alone as a function body, which a stray `})` cannot close to run the rest at the top level."""
    from py_mini_racer import JSEvalException, JSParseException

    try:
        racer.eval("throw 0; " + _wrapped(source, call=False), timeout_sec=left())
    except JSParseException:
        raise
    except JSEvalException:
        pass  # the throw: the script parses
    body = json.dumps(source)
    try:
        racer.eval(
            f"new (Object.getPrototypeOf(async function () {{}}).constructor)('ctx', {body}); null",
            timeout_sec=left(),
        )
    except JSEvalException:
        message = "the code closes the function it is the body of (a stray } or ) ?)"
        return {"syntax": {"name": "SyntaxError", "message": message}, "reusable": True}
    return {"ok": True, "reusable": True}


def _parse_error(text: str) -> dict:
    match = _PARSE_ERROR.match(text)
    if match is None:
        return {"message": text.strip().split("\n")[-1][:1000]}
    return {"message": match["message"], "line": int(match["line"]), "column": len(match["pad"]) + 1}


def _receive(stream) -> tuple[bytes, bytes] | None:
    frames = []
    for _ in range(2):
        head = stream.read(4)
        if len(head) < 4:
            return None
        (size,) = struct.unpack(">I", head)
        frames.append(stream.read(size))
        if len(frames[-1]) < size:
            return None
    return frames[0], frames[1]
