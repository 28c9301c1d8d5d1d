"""Exceptions a task raises to tell the harness why it did not produce measurements."""
from __future__ import annotations


class TaskNotApplicable(RuntimeError):
    """This task cannot evaluate this encoder (e.g. fine-tuning raw pixels, which have no
    trainable parameters); the harness records the task as skipped with the message as reason."""
