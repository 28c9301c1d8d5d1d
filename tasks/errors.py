"""Exceptions a task raises to say it cannot run, recorded by the harness as a skip."""


class TaskNotApplicable(Exception):
    """The task does not apply to this encoder (e.g. fine-tuning raw pixels); the message says why."""
