"""What the labels bought: the statistics of the manager's page, without Dagster (docs/labelling-loop.md, "Value").

- :mod:`al_core.value.intervals`: 95 % intervals of a probe's metrics (Wilson for accuracy, a seeded
  bootstrap over the evaluation set for balanced accuracy and macro F1) and of the gain between two probes;
- :mod:`al_core.value.curve`: the inverse power law learning curve ``a - b * n**-c`` and the projection of
  the labels needed to reach a target;
- :mod:`al_core.value.stopping`: the stabilising-predictions stop rule (Cohen's kappa between successive
  probes on a fixed stop set);
- :mod:`al_core.value.cost`: the project file's cost model as the catalogue's ``cost_rates`` rows;
- :mod:`al_core.value.record`: what the round's evaluation step stores per probe (predictions, intervals,
  kappa);
- :mod:`al_core.value.summary`: the numbers of the manager's page, `al status` and the Dagster metadata,
  read from the catalogue's views (al_core.catalogue.value).
"""
