"""SageMaker entry point in the toolkit's program mode (``sagemaker_program=train.py``).

The training container runs ``python train.py --fraction 0.3 ...`` with the job's hyperparameters; this hands
them to the package's command line, which reads the rest of the job (channels, model and output folders,
checkpoints) from the ``SM_*`` environment. The package itself must be installed in the container
(``pip install glister-train`` in a requirements.txt beside this file, or a custom image); in a checkout it
is found one folder up.
"""

import sys
from pathlib import Path

try:
    from glister_train.cli import main
except ImportError:  # running from a checkout
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from glister_train.cli import main

if __name__ == "__main__":
    sys.exit(main())
