"""The one benchmark harness behind ``fusedmlp bench``: every table is a *case* over it.

What a benchmark needs besides the calls it times lives here, once:

- **timing** -- :func:`seconds_per_call` (one round: a warm-up call, a calibrating call, then
  one timed loop of about ``target_time`` seconds and at least ``min_calls`` calls, on
  ``perf_counter_ns`` with the garbage collector off), :func:`one_call` (wall and CPU time of
  a single call, for epochs and fits), :func:`fastest` (the fastest single call) and
  :func:`concurrent_seconds` (calls started together on threads); a :class:`Repeat` is a call
  that loops itself (``f(n)`` makes ``n`` calls in C), timed as one call of ``f(calls)``;
- **interleaved rounds** -- :func:`interleave`: round ``r`` measures every competitor once,
  starting at the ``r``-th (round-robin rotation), so a burst of load on the machine hits
  every competitor alike; :func:`summary` gives the median and the min-max of the samples;
- **cases** -- :class:`Case`: ``setup(setting)`` (the timed callables, built in this
  process) and ``row(setting, samples)`` (how to print); :func:`run_case` times a case over
  its settings and returns its Markdown table; the pytest-benchmark suite in ``benchmarks/``
  times the same ``setup`` callables;
- **worker processes** -- :class:`Worker`: a competitor in its own process (``python -m
  fusedmlp.cli._harness MODULE:FUNCTION SPEC``; one JSON request a line on stdin, one JSON
  reply a line on stdout), its thread pools and CPUs set before it imports anything;
- **thread pinning** -- :func:`pinned` (threadpoolctl, and PyTorch's intra-op pool when it is
  loaded), :func:`pin_cpus` (the process's CPU affinity);
- **output** -- :func:`markdown` (the one table writer), :func:`machine`, :func:`versions`,
  :class:`CommandParser` (the options every command shares: ``--quick``, ``--rounds``,
  ``--target-time``, their defaults and quick values) and :func:`split_list`.

A case module declares what differs: the settings, the callables and the columns.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time

from .._version import PROG

__all__ = ["WALL", "CPU", "Repeat", "seconds_per_call", "median_seconds", "one_call",
           "fastest", "Stopwatch", "concurrent_seconds", "interleave", "summary", "medians",
           "Case", "measure_case", "run_case", "Worker", "WorkerError", "pinned", "pin_cpus",
           "markdown", "header", "machine", "versions", "importable", "CommandParser",
           "split_list", "program"]

#: The shortest time a calibrating call is taken to last (a clock tick on a slow clock).
_TICK = 1e-7
#: The clocks a timed loop may read (nanoseconds): wall time, and this process's CPU time
#: (all its threads; on a loaded machine steadier than wall time).
WALL, CPU = time.perf_counter_ns, time.process_time_ns


# =========================================================================== timing
class Repeat:
    """A call that makes `n` calls itself: ``function(n)`` (a loop in C, such as the GEMM
    floor); the harness times one ``function(calls)`` instead of a Python loop."""

    def __init__(self, function):
        self.function = function


def _loop(call, calls, clock):
    """Seconds per call of `calls` calls of `call` timed on `clock` (ns), the collector off."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        if isinstance(call, Repeat):
            start = clock()
            call.function(calls)
            elapsed = clock() - start
        else:
            start = clock()
            for _ in range(calls):
                call()
            elapsed = clock() - start
    finally:
        if was_enabled:
            gc.enable()
    return elapsed * 1e-9 / calls


def seconds_per_call(call, target_time, min_calls=2, clock=WALL):
    """One round: mean seconds per call of one timed loop of about `target_time` seconds and
    at least `min_calls` calls, after a warm-up call and a call that sizes the loop."""
    _loop(call, 1, clock)                                   # warm-up
    first = _loop(call, 1, clock)
    calls = max(min_calls, math.ceil(target_time / max(first, _TICK)))
    return _loop(call, calls, clock)


def median_seconds(call, rounds, target_time, min_calls=3, clock=WALL):
    """The median over `rounds` rounds of :func:`seconds_per_call` (one competitor alone)."""
    return statistics.median(seconds_per_call(call, target_time, min_calls, clock)
                             for _ in range(rounds))


def one_call(call):
    """``{"seconds", "cpu", "value"}``: wall and CPU (this process, all threads) seconds of one
    call of `call` and what it returned; for calls that are a whole run (an epoch, a fit)."""
    start, cpu = time.perf_counter_ns(), time.process_time_ns()
    value = call()
    cpu, seconds = time.process_time_ns() - cpu, time.perf_counter_ns() - start
    return {"seconds": seconds * 1e-9, "cpu": cpu * 1e-9, "value": value}


def fastest(call, seconds, after=None):
    """The fastest single call of `call` in calls for about `seconds` (after a warm-up call);
    with `after`, also the list of ``after()`` read after each timed call."""
    call()
    if after is not None:
        after()
    best, seen = None, []
    deadline = time.perf_counter_ns() + int(seconds * 1e9)
    while best is None or time.perf_counter_ns() < deadline:
        start = time.perf_counter_ns()
        call()
        elapsed = (time.perf_counter_ns() - start) * 1e-9
        best = elapsed if best is None else min(best, elapsed)
        if after is not None:
            seen.append(after())
    return best if after is None else (best, seen)


class Stopwatch:
    """Seconds since it was made (``seconds()``): how long a whole command has run."""

    def __init__(self):
        self.start = time.perf_counter_ns()

    def seconds(self):
        return (time.perf_counter_ns() - self.start) * 1e-9


def concurrent_seconds(calls):
    """Seconds until the last of `calls` returns, each started at once on its own thread (the
    GIL released by the call) after one untimed call each."""
    barrier = threading.Barrier(len(calls))
    elapsed = [0.0] * len(calls)

    def run(index):
        calls[index]()
        barrier.wait()
        start = time.perf_counter_ns()
        calls[index]()
        elapsed[index] = (time.perf_counter_ns() - start) * 1e-9

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return max(elapsed)


# =========================================================================== rounds
def interleave(measures, rounds, pause=0.0, failed=None):
    """``{name: [one sample a round]}`` of ``measures[name]()`` over `rounds` rounds; round
    ``r`` measures each name once, starting at the ``r``-th (round-robin rotation).

    `pause`: seconds of sleep before each measurement (a thread pool that just ran spins for
    a while; let it sleep before the next competitor runs). A measure that raises is left out
    of the later rounds; ``failed[name]`` (a dict, when given) says why, else it raises.
    """
    samples = {name: [] for name in measures}
    names = list(measures)
    for round_index in range(rounds):
        shift = round_index % len(names) if names else 0
        for name in names[shift:] + names[:shift]:
            if failed is not None and name in failed:
                continue
            if pause:
                time.sleep(pause)
            try:
                samples[name].append(measures[name]())
            except Exception as exc:
                if failed is None:
                    raise
                failed[name] = f"{type(exc).__name__}: {exc}"
    return samples


def summary(samples):
    """``{"median", "min", "max", "n"}`` of a list of seconds, or None for none."""
    if not samples:
        return None
    return {"median": statistics.median(samples), "min": min(samples), "max": max(samples),
            "n": len(samples)}


def medians(samples):
    """``{name: median}`` of the names that have samples."""
    return {name: statistics.median(values) for name, values in samples.items() if values}


# =========================================================================== cases
class Case:
    """One benchmark table: each setting's timed callables and how its row prints.

    A subclass writes ``setup(setting)`` (``{name: callable}``, everything built before the
    timing starts; a callable may be a :class:`Repeat`) and ``row(setting, samples)`` (the
    row's cells from ``{name: [one sample a round]}``), and sets `header`, `title` (printed
    above the table; may name ``{rounds}``) and `align` (as :func:`markdown` takes it).
    ``measure`` is one sample of a callable: seconds per call of one timed loop by default.
    """

    title = ""
    header: list = []
    align = None

    def setup(self, setting):
        raise NotImplementedError

    def row(self, setting, samples):
        raise NotImplementedError

    def measure(self, call, target_time, min_calls):
        return seconds_per_call(call, target_time, min_calls)


def measure_case(case, settings, rounds, target_time, min_calls=2):
    """``[(setting, {name: [one sample a round]})]``: for each setting, its callables
    (``case.setup``) measured in `rounds` interleaved rounds."""
    results = []
    for setting in settings:
        calls = case.setup(setting)
        results.append((setting, interleave(
            {name: (lambda call=call: case.measure(call, target_time, min_calls))
             for name, call in calls.items()}, rounds)))
    return results


def run_case(case, settings, rounds, target_time, min_calls=2):
    """`case`'s title and Markdown table over `settings` (see :func:`measure_case`)."""
    rows = [case.row(setting, samples)
            for setting, samples in measure_case(case, settings, rounds, target_time, min_calls)]
    table = markdown(case.header, rows, case.align)
    title = case.title.format(rounds=rounds)
    return f"{title}\n\n{table}" if title else table


# =========================================================================== workers
class WorkerError(RuntimeError):
    """A worker process replied with an error or died."""


class Worker:
    """A competitor in its own process: ``MODULE:FUNCTION(**spec)`` there returns ``{op:
    function}``, and each ``ask(op, **arguments)`` is answered by ``function(**arguments)``.

    The process is told before it imports anything: `threads` (BLAS and OpenMP pools, through
    the environment and threadpoolctl), `pin` (its CPU affinity: the first `threads` CPUs)
    and `env` (more variables). Its stderr goes to a file (a chatty worker never blocks on a
    full pipe); the last lines of it are in the error when the worker dies.
    """

    def __init__(self, label, target, spec=None, threads=None, pin=False, env=None):
        self.label = label
        self.errors = tempfile.TemporaryFile(mode="w+")
        environment = dict(os.environ, **(env or {}))
        if threads is not None:
            for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
                environment[name] = str(threads)
        setup = {"target": target, "spec": spec or {}, "threads": threads, "pin": pin}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "fusedmlp.cli._harness", json.dumps(setup)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.errors, text=True,
            env=environment)

    def ask(self, op, **arguments):
        """The reply of the worker to `op`; WorkerError when it failed or died."""
        try:
            self.process.stdin.write(json.dumps({"op": op, **arguments}) + "\n")
            self.process.stdin.flush()
        except OSError:
            pass                                     # it died: said below
        line = self.process.stdout.readline()
        if not line:
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
            self.errors.seek(0)
            lines = self.errors.read().strip().splitlines()
            raise WorkerError(f"the {self.label} worker died: "
                              + (lines[-1] if lines else
                                 f"exit status {self.process.returncode}"))
        reply = json.loads(line)
        if isinstance(reply, dict) and "error" in reply:
            raise WorkerError(reply["error"])
        return reply

    def close(self):
        if self.process.poll() is None:
            try:
                self.process.stdin.close()
            except OSError:
                pass
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
        self.errors.close()


def _serve(setup):
    """The worker's side: set threads and CPUs, build the ops, answer requests until stdin
    closes. Built-in op: ``ready`` (``{}`` once the ops are built)."""
    import importlib
    import warnings

    warnings.simplefilter("ignore")
    replies = os.fdopen(os.dup(1), "w", 1)
    os.dup2(2, 1)                    # nothing but replies reaches the pipe, C's prints neither
    sys.stdout = sys.stderr
    threads = setup["threads"]
    if setup["pin"] and threads:
        pin_cpus(threads)
    limits = None
    if threads is not None:
        from threadpoolctl import threadpool_limits

        limits = threadpool_limits(limits=threads)        # noqa: F841  (for the process)
    try:
        module, function = setup["target"].split(":")
        ops = getattr(importlib.import_module(module), function)(**setup["spec"])
        ops = {"ready": lambda: {}, **ops}
    except Exception as exc:                              # every request gets the reason
        why = f"{type(exc).__name__}: {exc}"
        ops = None
    for line in sys.stdin:
        request = json.loads(line)
        try:
            if ops is None:
                raise RuntimeError(why)
            op = request.pop("op")
            if op not in ops:
                raise ValueError(f"unknown op {op!r}")
            reply = ops[op](**request)
        except Exception as exc:            # report, keep serving: the table shows the gap
            reply = {"error": why if ops is None else f"{type(exc).__name__}: {exc}"}
        replies.write(json.dumps(reply) + "\n")
        replies.flush()


# =========================================================================== threads
@contextlib.contextmanager
def pinned(threads, user_api=None):
    """BLAS (and OpenMP) pools limited to `threads` with threadpoolctl (only `user_api`'s when
    given), and PyTorch's intra-op pool too when torch is loaded."""
    from threadpoolctl import threadpool_limits

    torch = sys.modules.get("torch")
    before = torch.get_num_threads() if torch is not None else None
    with threadpool_limits(limits=threads, user_api=user_api):
        if torch is not None:
            torch.set_num_threads(threads)
        try:
            yield
        finally:
            if torch is not None:
                torch.set_num_threads(before)


def pin_cpus(threads):
    """Run this process (and the threads it starts from now on) on its first `threads` CPUs,
    whatever size a library's own pool picks (XLA's CPU client spreads over every core)."""
    if hasattr(os, "sched_setaffinity"):
        cpus = sorted(os.sched_getaffinity(0))
        if threads < len(cpus):
            os.sched_setaffinity(0, cpus[:threads])


# =========================================================================== output
def markdown(header, rows, align=None):
    """A Markdown table: the header, a separator (``---``, or ``---:`` for the columns that
    `align` marks ``"r"``), one line per row of cells."""
    align = align or "l" * len(header)
    lines = ["| " + " | ".join(header) + " |",
             "| " + " | ".join("---:" if a == "r" else "---" for a in align) + " |"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def machine():
    """The CPU's model name and how many logical CPUs (and how many this process may use)."""
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    return f"{model}; {os.cpu_count()} logical CPUs" + (
        f" ({usable} usable)" if usable and usable != os.cpu_count() else "")


def header(title, command):
    """The lines a table's output starts with: ``# title``, the command, the machine (CPU and
    OS) and the installed versions."""
    installed = ", ".join(f"{k} {v}" for k, v in versions().items() if v)
    return "\n".join([f"# {title}", f"# command: {command}",
                      f"# machine: {machine()}; {platform.system()} {platform.release()}",
                      f"# versions: {installed}"])


def versions():
    """Installed versions, read from package metadata (importing torch or scikit-learn here
    would load their thread pools into every worker)."""
    from importlib import metadata

    out = {"python": platform.python_version()}
    for name in ("numpy", "scipy", "torch", "scikit-learn", "fusedmlp", "threadpoolctl"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def importable(module):
    """Whether `module` can be imported (looked up, not imported)."""
    import importlib.util

    return importlib.util.find_spec(module) is not None


# =========================================================================== options
def _shown(value):
    return f"{value:g}" if isinstance(value, float) else str(value)


class CommandParser(argparse.ArgumentParser):
    """The parser of ``fusedmlp bench COMMAND``, with the options every command shares.

    `defaults` are the values of options left unset (``None``); under ``--quick``, `quick`'s
    come first (so ``--quick --rounds 1`` is one quick round). ``--rounds`` and
    ``--target-time`` are added when `defaults` has them, ``--quick`` when `quick_help` is
    given; the command adds its other options, with ``default=None`` where `defaults` or
    `quick` names them.
    """

    def __init__(self, command, description, defaults, quick=None, quick_help=None, **kwargs):
        super().__init__(prog=program(command), description=description, **kwargs)
        self.bench_defaults, self.bench_quick = dict(defaults), dict(quick or {})
        if quick_help is not None:
            self.add_argument("--quick", action="store_true", help=quick_help)
        if "rounds" in defaults:
            self.add_argument("--rounds", type=int,
                              help="interleaved rounds" + self.said("rounds"))
        if "target_time" in defaults:
            self.add_argument("--target-time", type=float,
                              help="seconds per timed loop" + self.said("target_time"))

    def said(self, name):
        """" (default D; quick Q)": how a help text names an option's defaults."""
        text = f" (default {_shown(self.bench_defaults[name])}"
        if name in self.bench_quick:
            text += f"; quick {_shown(self.bench_quick[name])}"
        return text + ")"

    def parse_args(self, args=None, namespace=None):
        parsed = super().parse_args(args, namespace)
        chosen = dict(self.bench_defaults)
        if getattr(parsed, "quick", False):
            chosen.update(self.bench_quick)
        for name, value in chosen.items():
            if getattr(parsed, name, None) is None:
                setattr(parsed, name, value)
        return parsed


def split_list(parser, option, text, convert=str, allowed=None):
    """The comma-separated list `text` of `option`, each item converted; a usage error naming
    the option when an item does not convert or is not in `allowed`."""
    items = [item for item in text.split(",") if item]
    try:
        items = [convert(item) for item in items]
    except ValueError:
        parser.error(f"{option} must be a comma-separated list, got {text!r}")
    if allowed is not None and set(items) - set(allowed):
        parser.error(f"{option}: unknown {sorted(set(items) - set(allowed))}; choose from "
                     f"{','.join(map(str, allowed))}")
    return items


def program(command):
    """``fusedmlp bench COMMAND``: how every bench command names itself."""
    return f"{PROG} bench {command}".rstrip()


if __name__ == "__main__":
    _serve(json.loads(sys.argv[1]))
