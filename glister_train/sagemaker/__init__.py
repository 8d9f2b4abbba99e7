"""SageMaker: the training-job contract (``job``), the entry script of the toolkit's program mode (``train.py``),
the metric definitions next to the lines they parse (``metrics``) and the launcher (``launch``, extra ``[launch]``).

Nothing here imports the SageMaker SDK at import time: the launcher does when it is used.
"""
