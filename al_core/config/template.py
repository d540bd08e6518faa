"""The commented project file that `al init` writes (the production defaults).

tests/test_config.py holds it equal to the defaults of al_core.config.schema, so
the two cannot drift apart.
"""

DEFAULT_YAML = """\
# al-pipeline project file. Relative paths are relative to this file's folder.

name: my-project                  # shown in reports and `al status`

images:
  root: images                    # folder scanned recursively (<root>/<class>/<file> gives ground truth)
  manifest: null                  # or a CSV with a `path` column (and optional `class`) instead of root

# Class names, in order; labels must be one of these (or the skip label).
# null: taken from the ground-truth folder names under images.root.
classes: null

backbone:
  name: efficientnet_lite0        # `al backbones` lists every name
  image_size: 128                 # px, for backbones that take an input size (efficientnet_lite0)
  weights_path: null              # local weights file for air-gapped sites
  batch_size: 64

selection:
  seed_strategy: centroid         # round 0: random | centroid | typiclust | probcover
  query_strategy: dropquery       # later rounds: any name of `al_core.learn.strategies.list_strategies()`
  budget_per_round: 10            # images proposed per round (the study: the number of classes)
  total_budget: 200               # labels to buy in all: delivered labels count, skips do not
  answered_fraction: 1.0          # share of a query set that must be labelled before the next round
  seed: 0                         # base random seed; round r uses seed + r
  stop_when_stable: false         # true: stop proposing once the stop rule fires (it is always shown)
  stop_kappa: 0.99                # stop rule: agreement (Cohen's kappa) of successive probes on the stop set ...
  stop_window: 3                  # ... at or above stop_kappa for this many rounds in a row
  relabel_fraction: 0.0           # share of each query batch for images to label again (top suspects); 0: none
  class_balance: false            # dropquery's diverse pick within per-class quotas (an extension); false: the study's

evaluation:
  holdout: auto                   # images held out of querying (stratified by ground truth when known); 0: none;
                                  # auto: the smaller of 500 and 10 % of the images, at least 5 per class
  labels_from_ground_truth: false # true only for simulation: hold-out labels come from the folder names
  # labelled evaluation images can also be delivered as label files into <inbox>/eval/

labels:
  skip_label: skip                # an annotator's "cannot tell" (or Label Studio's Skip): an answer, not trained on
  image_url_template: "/data/local-files/?d={url_path}"  # {path} {relpath} {url_path} {image_id} {name}
  policy: latest                  # several annotators: latest | majority | unanimous (disputes go to adjudication)
  propose_skipped_again: false    # true: an image every annotator skipped may be proposed again later

label_studio:
  document_root: null             # Label Studio's LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT; null: images.root's parent
  prelabels: true                 # the probe's guess as a pre-annotation of each task; false: blind labelling
  url: null                       # a team's Label Studio (http://host:port); null: the one `al labelstudio serve` runs
  token_env: LABEL_STUDIO_API_KEY # the environment variable holding its API token (never written in this file)
  project: null                   # the Label Studio project's title; null: this project's name
  push_on_proposal: false         # true: every proposed batch is pushed to Label Studio (`al labelstudio push`)
  pull_in_sensor: false           # true: every inbox-sensor tick pulls new annotations (`al labelstudio pull`)
  pull_format: JSON               # JSON | JSON_MIN | CSV | TSV: the export pull writes (only JSON keeps skips)
  target_storage: false           # true: push adds a Local Files target storage writing into paths.inbox
                                  # (which must then lie under document_root)

paths:
  data_dir: data                  # database, vectors, probes, reports, Dagster home
  inbox: data/inbox               # annotators deliver label files here
  outbox: data/outbox             # query sets are written here

sensor:
  interval_s: 30                  # how often the inbox is looked at
  settle_s: 2.0                   # a file modified more recently than this is left for the next tick
  ingest_before_round: true       # before a round run, queue an ingest run (scan + embed) if the image root changed

schedule:
  retrain_cron: null              # e.g. "0 3 * * *": retrain the probe on all labels nightly; null: off

quality:
  near_duplicate_cosine: 0.98     # embeddings at least this similar are near-duplicates: never two in one batch
  class_floor: 0.25               # flag a class with fewer training labels than this share of an even split
  agreement_floor: 0.6            # warn when an agreement figure (Cohen's / Fleiss' kappa) falls below this

store:
  lock_timeout_s: 30.0            # how long a writer waits for a reader to release the database
  vectors_url: null               # fsspec URL of the vector part files (docs/scale-out.md); null: <data_dir>/vectors

# What a label costs (the manager's page of the report, `al status`): per label and/or per annotator hour,
# optionally by role; every annotator not listed under annotator_roles pays the plain prices.
cost:
  currency: EUR
  per_label: 0.0                  # price of one delivered label (skips are not charged it)
  per_hour: 0.0                   # price of one annotator hour (time per label as measured)
  overhead: 1.0                   # factor on top, e.g. 1.2 for review and management
  role_per_label: {}              # role -> price per label, e.g. {crowd: 0.08}
  role_per_hour: {}               # role -> price per hour, e.g. {expert: 80.0}
  annotator_roles: {}             # annotator (as delivered) -> role, e.g. {alice: expert, "7": crowd}

# The quality the team needs: the report projects the labels, hours and cost to reach it.
target:
  metric: accuracy                # accuracy | balanced_accuracy | macro_f1 (on the evaluation set)
  value: null                     # the value to reach (0-1); null: no target
"""
