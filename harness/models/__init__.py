"""The networks every worker builds, described without a framework, and the starting weights the
harness makes once and gives to every worker (the neutral format: torchvision's names and layouts)."""
