"""`python -m harness.gpu_check`: what bin/gpu-check runs."""

import sys

from harness.gpu_check.command import main

sys.exit(main())
