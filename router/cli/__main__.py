"""``python -m router.cli``: what the tests and the demo run, as the console script does."""

from router.cli import main

if __name__ == "__main__":
    main()
