# Shim for the SageMaker training toolkit's package mode: the toolkit treats a submitted directory as a
# Python package only when it finds a setup.py there, then runs `pip install .` and
# `python -m glister_train <hyperparameters>`. All metadata lives in pyproject.toml.
from setuptools import setup

setup()
