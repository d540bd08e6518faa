"""The labelling loop, without Dagster: propose, ingest labels, train, evaluate (docs/labelling-loop.md).

- Round 0 proposes the seed pool (batch 0) with the seed strategy.
- Round r >= 1 ingests the labels that answer batch r-1 (``labels.round = r``).
  Once batch r-1 is answered to ``selection.answered_fraction`` (or closed by
  hand), the same run trains probe r on every label so far, evaluates it, and
  proposes batch r with the query strategy.

Every table write is one transaction (SQL in ``al_core.catalogue``); outbox
files are written atomically; label files are moved only after their rows are
committed (a file found in the inbox whose bytes are already committed is
recognised as such and moved without applying anything twice).

Modules, in the order of a round: ``inbox`` (every inbox entry accounted for,
validation inputs, a sensor's look), ``deliveries`` (reading, naming and moving
label files safely), ``state`` (where the loop stands, work owed),
``pool`` (vectors and labels), ``holdout`` (the evaluation set), ``proposal``
(selecting and recording a batch), ``batch_rules`` (the share to label again,
no two near-duplicates), ``outbox`` (the batch's files), ``ingest_labels``
(label files in), ``train`` (the probe), ``evaluation`` (its metrics),
``label_quality`` (suspected label errors and class balance), ``requests``
(changes by hand), ``annotator`` (simulated annotators). Each Dagster asset
calls one step: ``propose_seed``, ``ingest_round_labels``,
``train_round_probe``, ``evaluate_round``, ``assess_round``, ``propose_round``.

The public names below are importable from this package (loaded on first use); no module is named
after a function it exports, so ``al_core.loop.propose`` is always the function.
"""

import importlib

_EXPORTS = {
    "errors": ("LoopError", "ValidationUnavailable"),
    "inbox": (
        "list_inbox",
        "survey_inbox",
        "look_at_inbox",
        "validation_inputs",
        "InboxView",
        "InboxSurvey",
        "Refused",
    ),
    "state": ("LoopState", "loop_state", "answered", "pending_work", "stop_reason"),
    "pool": ("Pool", "load_pool", "load_project_pool"),
    "holdout": ("stratified_holdout", "ensure_eval_set"),
    "proposal": ("Proposal", "propose", "propose_seed", "propose_round"),
    "outbox": ("write_outbox", "repair_outbox"),
    "ingest_labels": ("FileOutcome", "IngestReport", "RoundLabels", "ingest_label_files", "ingest_round_labels"),
    "train": ("ProbeRecord", "train_probe", "load_probe", "train_round_probe"),
    "evaluation": ("evaluate", "evaluate_round"),
    "label_quality": ("assess_round",),
    "batch_rules": ("Batch", "select_batch"),
    "class_changes": ("ClassListChanged", "check_labelled_classes", "relabel"),
    "requests": ("close_round", "retract_file", "request_retry", "request_close_round"),
}
_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}
__all__ = sorted(_MODULE_OF)


def __getattr__(name: str):
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
