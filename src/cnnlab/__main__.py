"""`python -m cnnlab` (also what torchrun launches)."""
from .cli import main

if __name__ == "__main__":
    raise SystemExit(main())
