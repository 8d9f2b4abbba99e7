"""The SageMaker program-mode entry point in a checkout: the same script as ``glister_train/sagemaker/train.py``."""

import runpy
from pathlib import Path

runpy.run_path(str(Path(__file__).resolve().parent.parent / "glister_train" / "sagemaker" / "train.py"), run_name="__main__")
