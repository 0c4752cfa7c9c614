"""Stopping on a signal: the handlers, the one-step lag of the agreement, a second signal.

Two real processes stopping on one step are tested end to end in test_train.py; here one
process, with the multi-process exchange run over its own one-device mesh."""

from __future__ import annotations

import os
import signal

import jax
import pytest

from fnst_jax import preemption
from fnst_jax.train_step import make_mesh


def test_one_process_stops_after_the_step_the_signal_came_in():
    previous = signal.getsignal(signal.SIGTERM)
    with preemption.StopRequest() as stop:
        assert not stop.poll()
        os.kill(os.getpid(), signal.SIGTERM)  # handled, not fatal
        assert stop.poll() and stop.agreed == signal.SIGTERM
        with pytest.raises(KeyboardInterrupt):  # a second signal stops at once
            os.kill(os.getpid(), signal.SIGTERM)
    assert signal.getsignal(signal.SIGTERM) is previous


def test_settle_agrees_on_a_signal_after_the_last_poll():
    with preemption.StopRequest() as stop:
        assert not stop.poll()
        os.kill(os.getpid(), signal.SIGINT)
        stop.settle()
        assert stop.agreed == signal.SIGINT


def test_several_processes_read_the_agreement_one_step_later(monkeypatch):
    """The max over the processes' flags is read a step after it starts: the step the signal
    arrives in does not stop, the next does."""
    monkeypatch.setattr(jax, "process_count", lambda: 2)
    with preemption.StopRequest() as stop:
        stop.agree_over(make_mesh())
        assert not stop.poll()
        stop.signal = signal.SIGTERM  # as the handler records it
        assert not stop.poll()  # this step's exchange starts; the last one read 0
        assert stop.poll() and stop.agreed == signal.SIGTERM
    with preemption.StopRequest() as stop:
        stop.agree_over(make_mesh())
        stop.poll()
        stop.signal = signal.SIGINT
        stop.settle()  # after the last step: an exchange read at once
        assert stop.agreed == signal.SIGINT
