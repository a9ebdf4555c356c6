"""Import every task module so :data:`~poisonlab.experiments.tasks_base.TASKS` holds every kind.

The runner imports this module (``import poisonlab.experiments.tasks``) before it looks a cell's
``kind`` up: ``backdoor`` (seeds 002 and 004, :mod:`~poisonlab.experiments.tasks_backdoor`) and
``feature-collision`` (Yaseen et al. 2020, :mod:`~poisonlab.experiments.tasks_collision`).
"""

from __future__ import annotations

from poisonlab.experiments import tasks_backdoor, tasks_collision
from poisonlab.experiments.tasks_base import TASKS

__all__ = ["TASKS", "tasks_backdoor", "tasks_collision"]
