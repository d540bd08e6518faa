"""Where the loop stands: the last batch, the open one, the budget, and the work a round run owes."""

from dataclasses import dataclass

from al_core.catalogue import rounds as rounds_q
from al_core.config import ProjectConfig
from al_core.loop import outbox


@dataclass
class LoopState:
    last_round: int | None  # highest proposed batch, None before the seed pool
    open_round: int | None  # batch still waiting for labels
    n_proposed_total: int
    budget_spent: bool  # labels delivered (skips apart) plus images waiting in open batches >= total_budget
    labels_delivered: int = 0  # labels rows that are not skips (what selection.total_budget counts)
    skips_delivered: int = 0
    stop_reason: str | None = None  # why nothing more is proposed (None: the loop goes on)

    @property
    def label_round(self) -> int:
        """The round partition that incoming labels belong to."""
        return 0 if self.last_round is None else self.last_round + 1


def loop_state(con, cfg: ProjectConfig) -> LoopState:
    last, proposed = rounds_q.last_round_and_spent(con)
    delivered, skips, waiting = rounds_q.budget_used(con)
    spent = delivered + waiting >= cfg.selection.total_budget
    return LoopState(
        last, rounds_q.latest_open_round(con), proposed, spent, delivered, skips, stop_reason(con, cfg, spent)
    )


def stop_reason(con, cfg: ProjectConfig, budget_spent: bool | None = None) -> str | None:
    """'total budget spent', 'predictions stable' (the stop rule fired and ``selection.stop_when_stable`` is
    true: al_core.value.stopping), or None while the loop goes on."""
    if budget_spent is None:
        delivered, _, waiting = rounds_q.budget_used(con)
        budget_spent = delivered + waiting >= cfg.selection.total_budget
    if budget_spent:
        return "total budget spent"
    if cfg.selection.stop_when_stable:
        from al_core.value.record import stop_decision

        if stop_decision(con, cfg).stop:
            return "predictions stable"
    return None


def answered(con, round_: int) -> tuple[int, int]:
    """(answered, proposed) images of batch ``round_``; a skip counts as an answer."""
    return rounds_q.answered_count(con, round_)


def is_answered(cfg: ProjectConfig, n_answered: int, n_proposed: int) -> bool:
    """Whether a batch is answered enough to go on: ``selection.answered_fraction`` of a non-empty batch."""
    return n_proposed > 0 and n_answered >= cfg.selection.answered_fraction * n_proposed


def pending_work(con, cfg: ProjectConfig) -> str | None:
    """What a round run owes although no label file waits (a key naming it), or None.

    - ``outbox-rN``: batch N is recorded but its outbox CSV is missing (a run
      stopped between the batch's commit and its CSV): ``repair_outbox`` writes it;
    - ``answered-rN``: the open batch N is answered but no run went on with it;
    - ``owed-rN``: no batch is open although the loop has not stopped (budget
      spent, or the stop rule with ``selection.stop_when_stable``): a run
      stopped between closing a batch and proposing batch N.
    """
    st = loop_state(con, cfg)
    if st.last_round is None:
        return None
    for r, _strategy in rounds_q.open_batches(con):
        if not outbox.has_batch_csv(cfg.outbox, r):
            return f"outbox-r{r}"
    if st.open_round is not None:
        return f"answered-r{st.open_round}" if is_answered(cfg, *answered(con, st.open_round)) else None
    return None if st.stop_reason else f"owed-r{st.label_round}"
