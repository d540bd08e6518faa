"""Label quality, without Dagster and without the catalogue: pure computations on arrays.

- ``suspects``: out-of-fold predicted probabilities of the probe on the labelled
  set (k-fold cross-validation) and cleanlab's label-quality scores and label
  issues (suspected label errors);
- ``duplicates``: near-duplicate pairs of embeddings (cosine similarity above a
  threshold) by a blocked search of O(N x D) memory, and the rule that a batch
  never holds two near-duplicates;
- ``balance``: labelled count per class, the probe's predicted share of each
  class on the pool, and the imbalance warnings;
- ``agreement``: votes and agreement per image, Cohen's kappa per annotator pair
  (overall and per class), Fleiss' kappa for the group, each annotator's
  agreement with the final label; cleanlab's multi-annotator consensus and
  ActiveLab relabelling scores.

The loop (``al_core.loop.label_quality``, ``al_core.loop.batch_rules``) reads and
writes the catalogue around these functions; the report, ``al status`` and
``al labels suspects`` show what it stored. Vocabulary as cleanlab's: N, K,
``labels`` (integers in [0, K)), ``pred_probs`` (N x K).
"""
