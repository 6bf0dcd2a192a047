"""``python -m dafnet`` (so ``accelerate launch -m dafnet train ...`` works)."""

from dafnet.cli import main

if __name__ == "__main__":
    main()
