"""Launch a training job on SageMaker: a script shim for ``python -m glister_train.sagemaker.launch``."""

import sys

from glister_train.sagemaker.launch import main

if __name__ == "__main__":
    sys.exit(main())
