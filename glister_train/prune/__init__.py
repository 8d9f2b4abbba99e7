"""The pruning stage: capture per-filter statistics (``capture``), rank and remove filters (``ranking``, on
torch-pruning's dependency graph, extra ``[prune]``), retrain, report (``stage``: :func:`prune` and the
``python -m glister_train prune`` command). Measured tables: README.md beside this file.

torch-pruning is imported only when filters are ranked or removed: training with ``--capture-epochs`` needs
only ``capture``.
"""
