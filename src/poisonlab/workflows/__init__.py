"""Multi-step experiments built from the library's parts (filter, fine-tune, re-measure...)."""

from __future__ import annotations

from poisonlab.workflows.filtering import FilterReport, attack_success, filter_and_finetune

__all__ = ["FilterReport", "attack_success", "filter_and_finetune"]
