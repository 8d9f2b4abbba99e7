"""The choices of the selection options, in one place: the selectors use them and the config validates against
them. Outside the selection package and free of torch, so that reading and checking a config stays light."""

SELECTOR_NAMES = ("full", "random", "adaptive-random", "glister")  # the registry in __init__ must match
FIRST_SUBSET = ("auto", "random", "selector")
GREEDY = ("naive", "stochastic", "batched")
LAST_LAYER = ("bias", "full")
LOOKAHEAD = ("sum", "mean")
SAMPLING = ("greedy", "soft")
SCORE_SOURCES = ("pass", "training")
SCORE_SOURCE_SETTINGS = ("auto", *SCORE_SOURCES)  # auto: training where it can (soft, one process, eager), else pass
VAL_GRADIENTS = ("all", "own_class")
DROP_BY = ("gain", "confidence", "margin")
CLASS_BUDGETS = ("size", "val_share", "val_loss")
BACKENDS = ("eager", "openvino")
