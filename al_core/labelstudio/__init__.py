"""Label Studio as a component of the project (docs/label-studio.md), Dagster-free.

- ``urls``: task image URLs under Label Studio's local-files serving (path relative to the document root, URL-encoded).
- ``server``: start and stop a real Label Studio server for a project (bound to 127.0.0.1, data under
  ``<data_dir>/label-studio``, local files served from the image root's parent folder, a first account with a token).
- ``client``: a small REST client (standard library only) for what the loop needs: projects, storages, tasks with
  predictions, annotations, users, exports.

Label Studio itself lives in its own virtual environment (``make labelstudio`` -> ``.venv-labelstudio``): its
Django, numpy and opencv pins differ from the project's, so nothing here imports it.
"""
