"""``python -m certkit.cli`` (what torchrun starts: ``torchrun ... -m certkit.cli certify ...``)."""
from certkit.cli import main

main()
