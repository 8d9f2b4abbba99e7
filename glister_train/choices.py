"""The selectors' names, in one place outside the selection package: the CLI's help and the registry's check use
them without importing torch. Each selector's options and their choices live with the selector."""

# the registry (glister_train/selection) must match
SELECTOR_NAMES = ("full", "random", "adaptive-random", "filtered-random", "glister", "reducible-loss")
DEFAULT_SELECTOR = "filtered-random"
FIRST_SUBSET = ("auto", "random", "selector")
