"""The project file's cost model (``cost:``) as the rows of the catalogue's ``cost_rates`` table.

A label costs ``overhead * (per_label + per_hour * seconds / 3600)``, with the prices of the annotator's
role when ``cost.annotator_roles`` names one (``cost.role_per_label`` / ``cost.role_per_hour``, each
falling back to the plain price), else the plain ``per_label`` and ``per_hour``. A skip is not charged
the per-label price; its time is charged. The ``label_times`` view applies the rates
(al_core.catalogue.value_schema); the evaluation step records them (al_core.value.record), so the views
price with the project file as of the latest evaluation.
"""

from __future__ import annotations


def cost_rate_rows(cost) -> list[tuple]:
    """(annotator or None, role, currency, per_label, per_hour, overhead) rows of a CostConfig: the default
    row (annotator None) first, then one per annotator with a role."""
    per_label, per_hour = dict(cost.role_per_label), dict(cost.role_per_hour)
    rows = [(None, None, cost.currency, float(cost.per_label), float(cost.per_hour), float(cost.overhead))]
    for annotator, role in cost.annotator_roles:
        rows.append(
            (
                annotator,
                role,
                cost.currency,
                float(per_label.get(role, cost.per_label)),
                float(per_hour.get(role, cost.per_hour)),
                float(cost.overhead),
            )
        )
    return rows


def has_prices(cost) -> bool:
    """Whether the cost model charges anything at all (all prices 0: the page says no prices are set)."""
    return any(
        v > 0
        for v in (
            cost.per_label,
            cost.per_hour,
            *dict(cost.role_per_label).values(),
            *dict(cost.role_per_hour).values(),
        )
    )
