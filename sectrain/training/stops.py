"""Stop requests: what SIGTERM and SIGINT ask of a command that trains (no TensorFlow here,
so that the command can listen from its first line)."""

import signal
from contextlib import contextmanager
from dataclasses import dataclass


@dataclass
class StopRequest:
    """What SIGTERM and SIGINT asked: `signal` is the first received (None before any);
    `training` is true while the training loop runs; `holding` while SIGINT is held back."""

    signal: int | None = None
    training: bool = False
    holding: bool = False

    @contextmanager
    def held(self):
        """Holds SIGINT back in the block, then raises KeyboardInterrupt if one came (or
        came earlier and Python dropped its KeyboardInterrupt). One that lands inside
        TensorFlow's import leaves it half done, to fail later with an unrelated error."""
        self.holding = True
        try:
            yield
        finally:
            self.holding = False
        if self.signal == signal.SIGINT:
            raise KeyboardInterrupt


_active = []  # the request being recorded in this process, if any


def handle_stop_signals(handler):
    """Sets `handler` for SIGTERM and SIGINT, except for one the process was started to
    ignore (as a shell starts `sectrain ... &` to ignore SIGINT), which stays ignored.
    Returns the handlers it replaced, by signal."""
    return {
        s: signal.signal(s, handler)
        for s in (signal.SIGTERM, signal.SIGINT)
        if signal.getsignal(s) != signal.SIG_IGN
    }


@contextmanager
def stop_requests():
    """Records SIGTERM and SIGINT in the `StopRequest` it yields, until the block ends; a
    block inside another shares the outer one's (a job's setup, then `train`).

    Before training there is nothing to save, and SIGINT stops at once (KeyboardInterrupt).
    In training, the loop honours a request after its current step, having saved a
    checkpoint; a second SIGINT stops at once. The record keeps a signal whose
    KeyboardInterrupt Python dropped, as it drops (and prints) an exception raised while a
    finalizer runs (an object's `__del__`, a generator closed by the garbage collector),
    which can happen at any moment: the next check then stops the command.
    """
    if _active:
        yield _active[-1]
        return
    request = StopRequest()

    def handler(signum, frame):
        repeated = request.signal is not None
        request.signal = request.signal or signum
        if signum == signal.SIGINT and not request.holding and (repeated or not request.training):
            raise KeyboardInterrupt

    try:
        previous = handle_stop_signals(handler)
    except ValueError:  # not the main thread: nobody to deliver signals to us
        previous = {}
    _active.append(request)
    try:
        yield request
    finally:
        _active.pop()
        for s, old in previous.items():
            signal.signal(s, old)


def _noted_by_the_sweep(signum, frame):
    """Between the jobs of a worker process: the sweep's own process noted the signal."""


def outlive_signals_between_jobs():
    """Keeps SIGTERM and SIGINT from ending a worker process of a parallel sweep between
    its jobs: its pool would report it broken, and the launcher would kill the other
    workers before they save. The sweep's process notes the signal and stops the jobs
    (see `sectrain.cli.stop_parallel_sweep`); a job's own `stop_requests` still hears them.
    A handler rather than SIG_IGN, which `stop_requests` would keep ignoring."""
    handle_stop_signals(_noted_by_the_sweep)
