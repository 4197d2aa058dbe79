"""`python -m harness.gpu_check`: what bin/gpu-check runs."""

import sys

from harness.gpu_check.command import main

if __name__ == "__main__":  # importing this module (as a test does with every module) runs nothing
    sys.exit(main())
